/* Marble version numbers. */
#ifndef MARBLE_VERSION_H
#define MARBLE_VERSION_H

#define MARBLE_VERSION_MAJOR 0
#define MARBLE_VERSION_MINOR 1
#define MARBLE_VERSION_PATCH 0
#define MARBLE_VERSION_STRING "0.1.0"
#define MARBLE_VERSION_NUMBER                                                                      \
    (MARBLE_VERSION_MAJOR * 10000 + MARBLE_VERSION_MINOR * 100 + MARBLE_VERSION_PATCH)

#endif
