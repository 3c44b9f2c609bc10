/* Marble: an embeddable, Arrow-native columnar state store. Umbrella header. */
#ifndef MARBLE_H
#define MARBLE_H

#include "marble/version.h"
#include "marble/error.h"
#include "marble/base.h"
#include "marble/sched.h"
#include "marble/vfs.h"
#include "marble/arrow.h"
#include "marble/csv.h"
#include "marble/db.h"
#include "marble/remote.h"
#include "marble/pipeline.h"
#include "marble/query.h"

#endif
