/* marble_version(): the library's version, for checks against version.h at run time. */
#include "marble/base.h"
#include "marble/version.h"

const char *marble_version(void)
{
    return MARBLE_VERSION_STRING;
}

int marble_version_number(void)
{
    return MARBLE_VERSION_NUMBER;
}
