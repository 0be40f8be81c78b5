#include "auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common.h"

#define TOKEN_PREFIX "drv_"
#define SECRET_BYTES 32

const char *auth_role_name(enum auth_role r)
{
	return r == AUTH_ADMIN ? "admin" : r == AUTH_READER ? "reader" : "none";
}

enum auth_role auth_role_parse(const char *s)
{
	if (s && !strcmp(s, "admin"))
		return AUTH_ADMIN;
	if (s && !strcmp(s, "reader"))
		return AUTH_READER;
	return AUTH_NONE;
}

void auth_sha256(const void *data, size_t len, uint8_t out[STORE_HASH_LEN])
{
	unsigned int n = STORE_HASH_LEN;

	/* EVP_Digest cannot fail for SHA-256 short of memory exhaustion, and
	 * then the zeroed hash matches no stored one. */
	if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
		memset(out, 0, STORE_HASH_LEN);
}

int auth_token_create(struct store *s, enum auth_role role, const char *name,
		      unsigned expires_days, int64_t now, char token[AUTH_TOKEN_MAX],
		      char public_id[AUTH_PUBLIC_ID_LEN + 1], char *err, size_t errlen)
{
	uint8_t idbytes[AUTH_PUBLIC_ID_LEN / 2], secret[SECRET_BYTES];
	char secret_text[2 * SECRET_BYTES];
	struct store_token t = { 0 };
	int ret;

	if (role == AUTH_NONE) {
		snprintf(err, errlen, "a token's role is admin or reader");
		return -EINVAL;
	}
	if (expires_days > 36500) {
		snprintf(err, errlen, "--expires-days %u: at most 36500 (100 years)", expires_days);
		return -EINVAL;
	}
	ret = ctl_random(idbytes, sizeof(idbytes));
	if (!ret)
		ret = ctl_random(secret, sizeof(secret));
	if (ret) {
		snprintf(err, errlen, "no random bytes from the kernel: %s", strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < sizeof(idbytes); i++)
		snprintf(public_id + 2 * i, 3, "%02x", idbytes[i]);
	ctl_b64url_encode(secret, sizeof(secret), secret_text);
	snprintf(token, AUTH_TOKEN_MAX, TOKEN_PREFIX "%s_%s", public_id, secret_text);
	t.public_id = public_id;
	t.name = (char *)(name ? name : "");
	t.role = (char *)auth_role_name(role);
	auth_sha256(token, strlen(token), t.hash);
	t.created_at = now;
	t.expires_at = expires_days ? now + (int64_t)expires_days * 86400 * 1000 : 0;
	ret = store_token_insert(s, &t);
	OPENSSL_cleanse(secret, sizeof(secret));
	if (ret)
		snprintf(err, errlen, "cannot keep the token in the database: %s", strerror(-ret));
	return ret;
}

/* "drv_" + 12 hex digits + "_" + the secret. */
static int split(const char *token, char public_id[AUTH_PUBLIC_ID_LEN + 1])
{
	const char *p = token + strlen(TOKEN_PREFIX);

	if (strncmp(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) ||
	    strlen(p) < AUTH_PUBLIC_ID_LEN + 2 || p[AUTH_PUBLIC_ID_LEN] != '_' ||
	    strlen(token) >= AUTH_TOKEN_MAX)
		return -EINVAL;
	for (int i = 0; i < AUTH_PUBLIC_ID_LEN; i++) {
		if (!strchr("0123456789abcdef", p[i]) || !p[i])
			return -EINVAL;
	}
	memcpy(public_id, p, AUTH_PUBLIC_ID_LEN);
	public_id[AUTH_PUBLIC_ID_LEN] = '\0';
	return 0;
}

int auth_check(struct store *s, const char *authorization, int64_t now, enum auth_role *role,
	       char public_id[AUTH_PUBLIC_ID_LEN + 1], char *why, size_t whylen)
{
	struct store_token t = { 0 };
	uint8_t hash[STORE_HASH_LEN];
	const char *token;
	char when[40];
	int ret;

	if (!authorization || !*authorization) {
		snprintf(why, whylen, "this request needs an Authorization: Bearer TOKEN header");
		return -EACCES;
	}
	if (strncasecmp(authorization, "Bearer ", 7)) {
		snprintf(why, whylen, "the Authorization header must be 'Bearer TOKEN'");
		return -EACCES;
	}
	token = authorization + 7;
	while (*token == ' ')
		token++;
	if (split(token, public_id)) {
		snprintf(why, whylen, "the bearer token is not a drover token (drv_...)");
		return -EACCES;
	}
	ret = store_token_get(s, public_id, &t);
	if (ret == -ENOENT)
		goto unknown;
	if (ret)
		return ret;
	auth_sha256(token, strlen(token), hash);
	/* Same answer for a wrong secret as for an unknown id: the public id
	 * alone proves nothing and should tell nothing. */
	if (CRYPTO_memcmp(hash, t.hash, sizeof(hash)))
		goto unknown;
	if (t.revoked_at) {
		ctl_time_format(t.revoked_at, when, sizeof(when));
		snprintf(why, whylen, "token %s was revoked at %s", public_id, when);
		ret = -EACCES;
	} else if (t.expires_at && t.expires_at <= now) {
		ctl_time_format(t.expires_at, when, sizeof(when));
		snprintf(why, whylen, "token %s expired at %s", public_id, when);
		ret = -EACCES;
	} else {
		*role = auth_role_parse(t.role);
		ret = *role == AUTH_NONE ? -EACCES : 0;
		if (ret)
			snprintf(why, whylen, "token %s has an unknown role '%s'", public_id, t.role);
	}
	store_token_clear(&t);
	return ret;

unknown:
	store_token_clear(&t);
	snprintf(why, whylen, "unknown token");
	return -EACCES;
}
