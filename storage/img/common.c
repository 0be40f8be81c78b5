/* Helpers every drover-img subcommand shares: messages, sizes, -o option
 * lists, the progress line, opening images. */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blk_int.h"
#include "util.h"

#define IMG_SIZE_MAX ((uint64_t)INT64_MAX)

/* ---- messages ---- */

/* A message quotes what the user typed, which may hold control characters;
 * it must stay one printable line. */
static void put_printable(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\x%02x", *p);
		else
			fputc(*p, f);
	}
}

void img_err(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fputs(IMG_PROG ": ", stderr);
	put_printable(stderr, msg);
	fputc('\n', stderr);
}

void img_blk_err(const char *path, const char *err, int ret)
{
	size_t plen = strlen(path);

	if (err && *err) {
		/* The layer names the file itself; do not say it twice. */
		if (!strncmp(err, path, plen) && err[plen] == ':')
			img_err("%s", err);
		else
			img_err("%s: %s", path, err);
		return;
	}
	img_err("%s: %s", path, strerror(ret < 0 ? -ret : EIO));
}

const char *img_strip_path(const char *err, const char *path)
{
	size_t plen = strlen(path);

	if (!strncmp(err, path, plen) && err[plen] == ':')
		err += plen + 1;
	while (*err == ' ')
		err++;
	return err;
}

int img_bad_option(const char *cmd, int opt, char **argv)
{
	const char *arg = argv[optind - 1];

	if (opt == ':')
		img_err("%s: option '%s' requires an argument", cmd, arg);
	else if (optopt && !(arg[0] == '-' && arg[1] == '-'))
		img_err("%s: unrecognized option '-%c'", cmd, optopt);
	else
		img_err("%s: unrecognized option '%s'", cmd, arg);
	return 1;
}

/* ---- sizes ---- */

static int suffix_unit(char c, uint64_t *unit)
{
	static const char units[] = "bkmgtpe";
	const char *p = strchr(units, c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);

	if (!c || !p)
		return -EINVAL;
	*unit = 1ULL << (10 * (p - units));
	return 0;
}

int img_parse_size(const char *s, uint64_t *out)
{
	uint64_t whole = 0, unit = 1;
	double frac = 0;
	const char *p = s;
	bool has_frac = false;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		double scale = 0.1;

		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
			frac += (*p - '0') * scale;
		has_frac = true;
	}
	if (*p) {
		if (suffix_unit(*p, &unit) < 0)
			return -EINVAL;
		p++;
		if (unit > 1 && (!strcmp(p, "iB") || !strcmp(p, "B")))
			p += strlen(p);
		if (*p)
			return -EINVAL;
	}
	/* A fraction of a byte is not a size. */
	if (has_frac && unit == 1)
		return -EINVAL;
	if (whole > IMG_SIZE_MAX / unit)
		return -ERANGE;
	whole *= unit;
	if (has_frac) {
		uint64_t extra = (uint64_t)(frac * (double)unit);

		if (extra > IMG_SIZE_MAX - whole)
			return -ERANGE;
		whole += extra;
	}
	*out = whole;
	return 0;
}

void img_size_str(uint64_t v, char *buf, size_t len)
{
	static const char *const suffix[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned i = 0;

	/* A unit is used once the number would reach 1000 in the smaller one,
	 * so the figure never needs a fourth digit before the point. */
	while (i < ARRAY_SIZE(suffix) - 1 && (double)v >= 1000.0 * (double)(1ULL << (10 * i)))
		i++;
	snprintf(buf, len, "%0.3g %s", (double)v / (double)(1ULL << (10 * i)), suffix[i]);
}

/* ---- -o option lists ---- */

static void opts_set(struct img_opts *o, char *key, char *val)
{
	for (unsigned i = 0; i < o->n; i++) {
		if (!strcmp(o->v[i].key, key)) {
			free(o->v[i].key);
			free(o->v[i].val);
			o->v[i].key = key;
			o->v[i].val = val;
			return;
		}
	}
	o->v[o->n].key = key;
	o->v[o->n].val = val;
	o->n++;
}

/* Copies one element of the list (up to an unescaped comma) into a new
 * string with ",," turned into ","; *s moves past the element. */
static char *opts_next(const char **s, bool *trailing_comma)
{
	const char *p = *s;
	char *out = malloc(strlen(p) + 1), *q = out;

	if (!out)
		return NULL;
	while (*p) {
		if (*p == ',') {
			if (p[1] != ',')
				break;
			p++;
		}
		*q++ = *p++;
	}
	*q = '\0';
	*trailing_comma = *p == ',' && !p[1];
	*s = *p ? p + 1 : p;
	return out;
}

int img_opts_add(struct img_opts *o, const char *s, char *err, size_t errlen)
{
	const char *p = s;
	size_t cap = o->n + strlen(s) / 2 + 2;
	struct img_opt *v = realloc(o->v, cap * sizeof(*v));

	if (!v)
		return -ENOMEM;
	o->v = v;
	if (!*s) {
		snprintf(err, errlen, "invalid option list: '%s'", s);
		return -EINVAL;
	}
	while (*p) {
		bool trailing_comma;
		char *elem = opts_next(&p, &trailing_comma), *eq, *val = NULL, *key;

		if (!elem)
			return -ENOMEM;
		/* An empty element, leading or trailing comma included, is a typo. */
		if (!*elem || trailing_comma) {
			free(elem);
			snprintf(err, errlen, "invalid option list: '%s'", s);
			return -EINVAL;
		}
		if (!strcmp(elem, "help") || !strcmp(elem, "?")) {
			o->help = true;
			free(elem);
			continue;
		}
		eq = strchr(elem, '=');
		if (eq) {
			*eq = '\0';
			val = strdup(eq + 1);
			if (!val) {
				free(elem);
				return -ENOMEM;
			}
		}
		if (!*elem) {
			snprintf(err, errlen, "invalid option '=%s': no name before '='", val);
			free(elem);
			free(val);
			return -EINVAL;
		}
		key = elem;
		opts_set(o, key, val);
	}
	return 0;
}

const char *img_opts_get(const struct img_opts *o, const char *key)
{
	for (unsigned i = 0; i < o->n; i++)
		if (!strcmp(o->v[i].key, key))
			return o->v[i].val ? o->v[i].val : "on";
	return NULL;
}

bool img_opts_has(const struct img_opts *o, const char *key)
{
	return img_opts_get(o, key) != NULL;
}

void img_opts_free(struct img_opts *o)
{
	for (unsigned i = 0; i < o->n; i++) {
		free(o->v[i].key);
		free(o->v[i].val);
	}
	free(o->v);
	memset(o, 0, sizeof(*o));
}

/* ---- creation options per format ---- */

struct create_opt_desc {
	const char *name;
	const char *type;
	const char *help;
	bool qcow2_only;
};

static const struct create_opt_desc create_opt_descs[] = {
	{ "backing_file", "str", "File name of a base image", true },
	{ "backing_fmt", "str", "Image format of the base image", true },
	{ "cluster_size", "size", "qcow2 cluster size (512 to 2M, a power of two)", true },
	{ "compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])", true },
	{ "compression_type", "str", "Compression method used for compressed clusters (zlib)",
	  true },
	{ "extended_l2", "bool (on/off)", "Extended L2 tables (subclusters)", true },
	{ "lazy_refcounts", "bool (on/off)", "Postpone refcount updates", true },
	{ "preallocation", "str", NULL, false },
	{ "refcount_bits", "num", "Width of a reference count entry in bits", true },
	{ "size", "size", "Virtual disk size", false },
};

static bool fmt_is_qcow2(const char *fmt)
{
	return !strcmp(fmt, "qcow2");
}

void img_create_opts_help(const char *fmt)
{
	bool q = fmt_is_qcow2(fmt);

	printf("Supported %s options:\n", fmt);
	for (unsigned i = 0; i < ARRAY_SIZE(create_opt_descs); i++) {
		const struct create_opt_desc *d = &create_opt_descs[i];
		char name[64];

		if (d->qcow2_only && !q)
			continue;
		snprintf(name, sizeof(name), "%s=<%s>", d->name, d->type);
		if (!d->help)
			printf("  %-22s - Preallocation mode (allowed values: off, %sfalloc, full)\n",
			       name, q ? "metadata, " : "");
		else
			printf("  %-22s - %s\n", name, d->help);
	}
}

bool img_format_known(const char *fmt)
{
	return blk_driver_by_name(fmt) != NULL;
}

static int parse_bool(const char *val, bool *out)
{
	static const char *const yes[] = { "on", "yes", "true" };
	static const char *const no[] = { "off", "no", "false" };

	for (unsigned i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcmp(val, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcmp(val, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int opt_size(const char *key, const char *val, uint64_t *out, char *err, size_t errlen)
{
	int ret = img_parse_size(val, out);

	if (ret == -ERANGE)
		snprintf(err, errlen, "option %s: '%s' is above the maximum of 8E", key, val);
	else if (ret < 0)
		snprintf(err, errlen, "option %s: '%s' is not a size (use 512, 64k, 1M, 2G...)",
			 key, val);
	return ret < 0 ? -EINVAL : 0;
}

static int fill_qcow2(struct blk_create_opts *c, const struct img_opts *o, char *err,
		      size_t errlen)
{
	const char *v;
	uint64_t n;

	if ((v = img_opts_get(o, "cluster_size"))) {
		if (opt_size("cluster_size", v, &n, err, errlen) < 0)
			return -EINVAL;
		if (!is_pow2(n) || n < 512 || n > 2 * MiB) {
			snprintf(err, errlen,
				 "option cluster_size: '%s' is not a power of two between 512 and 2M",
				 v);
			return -EINVAL;
		}
		c->cluster_size = (uint32_t)n;
	}
	if ((v = img_opts_get(o, "compat"))) {
		if (!strcmp(v, "0.10") || !strcmp(v, "v2")) {
			c->compat = 2;
		} else if (!strcmp(v, "1.1") || !strcmp(v, "v3")) {
			c->compat = 3;
		} else {
			snprintf(err, errlen, "option compat: '%s' is not 0.10, v2, 1.1 or v3", v);
			return -EINVAL;
		}
	}
	if ((v = img_opts_get(o, "lazy_refcounts")) && parse_bool(v, &c->lazy_refcounts) < 0) {
		snprintf(err, errlen, "option lazy_refcounts: '%s' is not on or off", v);
		return -EINVAL;
	}
	if ((v = img_opts_get(o, "extended_l2")) && parse_bool(v, &c->extended_l2) < 0) {
		snprintf(err, errlen, "option extended_l2: '%s' is not on or off", v);
		return -EINVAL;
	}
	if ((v = img_opts_get(o, "refcount_bits"))) {
		if (parse_uint(v, 1, 64, &n) < 0 || !is_pow2(n)) {
			snprintf(err, errlen,
				 "option refcount_bits: '%s' is not a power of two from 1 to 64", v);
			return -EINVAL;
		}
		c->refcount_bits = (unsigned)n;
	}
	if ((v = img_opts_get(o, "compression_type")) && strcmp(v, "zlib")) {
		snprintf(err, errlen, "option compression_type: '%s' is not supported (zlib is)", v);
		return -EINVAL;
	}
	c->backing_file = img_opts_get(o, "backing_file");
	c->backing_format = img_opts_get(o, "backing_fmt");
	if (c->compat == 2) {
		if (c->lazy_refcounts) {
			snprintf(err, errlen, "option lazy_refcounts needs compat=1.1 (v3)");
			return -EINVAL;
		}
		if (c->refcount_bits && c->refcount_bits != 16) {
			snprintf(err, errlen, "option refcount_bits other than 16 needs compat=1.1 (v3)");
			return -EINVAL;
		}
		if (c->extended_l2) {
			snprintf(err, errlen, "option extended_l2 needs compat=1.1 (v3)");
			return -EINVAL;
		}
	}
	return 0;
}

int img_create_opts_fill(struct blk_create_opts *c, const struct img_opts *o, const char *fmt,
			 char *err, size_t errlen)
{
	bool q = fmt_is_qcow2(fmt);
	const char *v;

	for (unsigned i = 0; i < o->n; i++) {
		bool known = false;

		for (unsigned j = 0; j < ARRAY_SIZE(create_opt_descs); j++)
			if (!strcmp(o->v[i].key, create_opt_descs[j].name) &&
			    (q || !create_opt_descs[j].qcow2_only))
				known = true;
		if (!known) {
			snprintf(err, errlen, "format %s has no option '%s' (see -o help)", fmt,
				 o->v[i].key);
			return -EINVAL;
		}
	}
	c->format = fmt;
	if ((v = img_opts_get(o, "size")) && opt_size("size", v, &c->size, err, errlen) < 0)
		return -EINVAL;
	if ((v = img_opts_get(o, "preallocation"))) {
		if (blk_prealloc_parse(v, &c->prealloc) < 0 ||
		    (!q && c->prealloc == BLK_PREALLOC_METADATA)) {
			snprintf(err, errlen, "option preallocation: '%s' is not off, %sfalloc or full",
				 v, q ? "metadata, " : "");
			return -EINVAL;
		}
	}
	return q ? fill_qcow2(c, o, err, errlen) : 0;
}

/* ---- snapshot table ---- */

void img_print_snapshots(const struct blk_snapshot_info *sn, unsigned n)
{
	printf("Snapshot list:\n");
	printf("%-9s %-16s %8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
	       "ICOUNT");
	for (unsigned i = 0; i < n; i++) {
		uint64_t secs = sn[i].vm_clock_nsec / 1000000000ULL;
		time_t date = (time_t)sn[i].date_sec;
		char size[32], when[32] = "", clock[48], icount[32] = "";
		struct tm tm;

		img_size_str(sn[i].vm_state_size, size, sizeof(size));
		if (localtime_r(&date, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
			 (unsigned long long)(secs / 3600), (unsigned long long)(secs / 60 % 60),
			 (unsigned long long)(secs % 60),
			 (unsigned long long)(sn[i].vm_clock_nsec / 1000000 % 1000));
		if (sn[i].icount != UINT64_MAX)
			snprintf(icount, sizeof(icount), "%llu", (unsigned long long)sn[i].icount);
		printf("%-9s %-16s %8s%20s%13s%11s\n", sn[i].id, sn[i].name, size, when, clock,
		       icount);
	}
}

/* ---- progress ---- */

void img_progress_init(struct img_progress *p, bool on)
{
	p->on = on;
	p->last = 0;
	if (on) {
		printf("    (%3.2f/100%%)\r", 0.0);
		fflush(stdout);
	}
}

void img_progress_update(struct img_progress *p, uint64_t done, uint64_t total)
{
	double pct = total ? (double)done * 100.0 / (double)total : 100.0;

	if (!p->on)
		return;
	if (pct > 100.0)
		pct = 100.0;
	/* Redraw at whole-percent steps: enough to see it move, few writes. */
	if (pct - p->last < 1.0 && !(pct == 100.0 && p->last < 100.0))
		return;
	p->last = pct;
	printf("    (%3.2f/100%%)\r", pct);
	fflush(stdout);
}

void img_progress_end(struct img_progress *p)
{
	if (!p->on)
		return;
	printf("    (%3.2f/100%%)\r\n", 100.0);
	fflush(stdout);
	p->on = false;
}

/* ---- opening ---- */

int img_open(struct blk **out, const char *path, const char *fmt, unsigned flags,
	     enum blk_cache cache)
{
	struct blk_open_opts o = {
		.format = fmt,
		.cache = cache,
		.readonly = !(flags & IMG_OPEN_RW),
		.no_backing = flags & IMG_OPEN_NO_BACKING,
		.force_share = flags & IMG_OPEN_SHARE,
	};
	char err[512] = "";
	int ret;

	if (fmt && !img_format_known(fmt)) {
		img_err("%s: unknown format '%s'", path, fmt);
		return -EINVAL;
	}
	ret = blk_open(out, path, &o, err, sizeof(err));
	if (ret < 0)
		img_blk_err(path, err, ret);
	return ret;
}

int img_parse_output(const char *s, bool *json)
{
	if (!strcmp(s, "json")) {
		*json = true;
		return 0;
	}
	if (!strcmp(s, "human")) {
		*json = false;
		return 0;
	}
	img_err("--output: '%s' is not human or json", s);
	return -EINVAL;
}

int img_parse_cache(const char *s, const char *opt, enum blk_cache *out)
{
	if (blk_cache_parse(s, out) < 0) {
		img_err("%s: '%s' is not a cache mode (none, writeback, writethrough, "
			"directsync, unsafe)", opt, s);
		return -EINVAL;
	}
	return 0;
}

bool img_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	static const unsigned char zero16[16];

	if (len <= 16)
		return !memcmp(p, zero16, len);
	/* Once the head is zero, comparing the buffer with itself shifted by
	 * 16 bytes checks the rest with the library's vectorised memcmp. */
	return !memcmp(p, zero16, 16) && !memcmp(p, p + 16, len - 16);
}

void *img_alloc_buf(size_t len)
{
	void *p;

	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	return p;
}
