/* Small helpers the controller's modules share: wall-clock time, random
 * ids, RFC 3339 timestamps, base64url (cursors, tokens). */
#ifndef DROVER_CTL_COMMON_H
#define DROVER_CTL_COMMON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_UUID_LEN 36              /* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */

/* Milliseconds since the epoch (what the database keeps). */
int64_t ctl_now_ms(void);

/* A random (version 4) UUID into out[CTL_UUID_LEN + 1]; 0 or -errno. */
int ctl_uuid(char out[CTL_UUID_LEN + 1]);

/* Fills buf with random bytes from the kernel; 0 or -errno. */
int ctl_random(void *buf, size_t len);

/* "2026-11-25T10:00:00.123Z" into out (at least 32 bytes). */
void ctl_time_format(int64_t ms, char *out, size_t outlen);

/* base64url without padding. encode: out needs 4 * ceil(len / 3) + 1 bytes;
 * returns the length written. decode: -EINVAL for a character outside the
 * alphabet or an impossible length, -ENOSPC when out is too small, else the
 * number of bytes decoded. */
size_t ctl_b64url_encode(const void *data, size_t len, char *out);
int ctl_b64url_decode(const char *in, void *out, size_t outlen);

/* Is s a name in the controller's sense: 1..63 characters, a letter first,
 * then letters, digits, '.', '_' or '-' (VM names, host names, label
 * keys)? */
int ctl_name_valid(const char *s);

/* Is s a label key: 1..63 of letters, digits, '.', '_', '/' or '-'? (VM
 * labels, placement host_labels, host labels from agents.) */
int ctl_label_key_valid(const char *s);

/* Makes s (in place) valid UTF-8 without control characters: each byte
 * that is neither becomes '?'. For messages that quote what a client
 * sent (a percent-decoded path may hold any byte). */
void ctl_text_clean(char *s);


#endif
