/* Small JSON helpers shared by every parser of drover's JSON documents. */
#ifndef DROVER_JSONUTIL_H
#define DROVER_JSONUTIL_H

#include <jansson.h>

/* What a JSON value is, for error messages: "an object", "a string", "a
 * number with a fraction", "null"... */
const char *json_type_name(const json_t *v);

#endif
