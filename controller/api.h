/* The REST API /v1 (controller/openapi.yaml is its contract): routing,
 * authentication, request checks, idempotency keys, and the handlers.
 *
 * The order every request goes through, each step answering with its own
 * status when the request fails it:
 *   route (404 unknown path, 405 method) -> token (401, 403 for a reader's
 *   write) -> query parameters (400) -> body: media type (415), JSON (400)
 *   -> Idempotency-Key (replay, or 422 idempotency-mismatch) -> handler. */
#ifndef DROVER_API_H
#define DROVER_API_H

#include "http.h"

#define API_LIMIT_DEFAULT 100
#define API_LIMIT_MAX 500
#define API_IDEMPOTENCY_MS (24LL * 3600 * 1000)

/* An http_handler; opaque is the struct ctl. */
void api_handle(void *opaque, const struct http_request *req, struct http_response *resp);

#endif
