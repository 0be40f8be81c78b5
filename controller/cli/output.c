#include "output.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CELL_MAX 256

const json_t *output_get(const json_t *obj, const char *path)
{
	char key[128];
	const char *dot;

	while (obj && (dot = strchr(path, '.'))) {
		size_t n = (size_t)(dot - path);

		if (n >= sizeof(key))
			return NULL;
		memcpy(key, path, n);
		key[n] = 0;
		obj = json_object_get(obj, key);
		path = dot + 1;
	}
	return obj ? json_object_get(obj, path) : NULL;
}

void output_value(const json_t *v, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = 0;
	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_STRING:
		snprintf(buf, len, "%s", json_string_value(v));
		break;
	case JSON_INTEGER:
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		snprintf(buf, len, "%.2f", json_real_value(v));
		break;
	case JSON_TRUE:
		snprintf(buf, len, "yes");
		break;
	case JSON_FALSE:
		snprintf(buf, len, "no");
		break;
	case JSON_NULL:
		snprintf(buf, len, "-");
		break;
	case JSON_OBJECT: {
		const char *k;
		json_t *x;

		json_object_foreach((json_t *)v, k, x) {
			char one[CELL_MAX];

			output_value(x, one, sizeof(one));
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s=%s", n ? "," : "",
					      k, one);
		}
		if (!n)
			snprintf(buf, len, "-");
		break;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *x;

		json_array_foreach(v, i, x) {
			char one[CELL_MAX];

			output_value(x, one, sizeof(one));
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", n ? "," : "", one);
		}
		if (!n)
			snprintf(buf, len, "-");
		break;
	}
	}
}

static void cell(const json_t *obj, const struct cli_column *c, char *buf, size_t len)
{
	const json_t *v = output_get(obj, c->path);

	if (c->format)
		c->format(obj, v, buf, len);
	else
		output_value(v, buf, len);
	/* One line per row, whatever the data holds. */
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

static void print_cell(FILE *f, const char *text, size_t width, bool last)
{
	if (last)
		fprintf(f, "%s\n", text);
	else
		fprintf(f, "%-*s  ", (int)width, text);
}

void output_table(FILE *f, const json_t *items, const struct cli_column *cols, size_t ncols)
{
	size_t n = json_array_size(items), *w = calloc(ncols, sizeof(*w));
	char buf[CELL_MAX];

	if (!w)
		return;
	for (size_t c = 0; c < ncols; c++)
		w[c] = strlen(cols[c].header);
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < ncols; c++) {
			cell(json_array_get(items, i), &cols[c], buf, sizeof(buf));
			if (strlen(buf) > w[c])
				w[c] = strlen(buf);
		}
	}
	for (size_t c = 0; c < ncols; c++)
		print_cell(f, cols[c].header, w[c], c + 1 == ncols);
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < ncols; c++) {
			cell(json_array_get(items, i), &cols[c], buf, sizeof(buf));
			print_cell(f, buf, w[c], c + 1 == ncols);
		}
	}
	free(w);
}

void output_fields(FILE *f, const json_t *obj, const struct cli_column *rows, size_t nrows)
{
	size_t w = 0;
	char buf[CELL_MAX * 4];

	for (size_t r = 0; r < nrows; r++)
		if (strlen(rows[r].header) > w)
			w = strlen(rows[r].header);
	for (size_t r = 0; r < nrows; r++) {
		cell(obj, &rows[r], buf, sizeof(buf));
		fprintf(f, "%s:%*s %s\n", rows[r].header, (int)(w - strlen(rows[r].header)), "", buf);
	}
}

void output_json(FILE *f, const json_t *v)
{
	json_dumpf(v, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', f);
}

void output_mib(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	json_int_t mib = json_integer_value(v);

	if (!json_is_integer(v))
		snprintf(buf, len, "-");
	else if (mib >= 1024 && mib % 1024 == 0)
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT "G", mib / 1024);
	else if (mib >= 1024)
		snprintf(buf, len, "%.1fG", (double)mib / 1024);
	else
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT "M", mib);
}

void output_age(const json_t *obj, const json_t *v, char *buf, size_t len)
{
	struct tm tm = { 0 };
	const char *s = json_string_value(v);
	long d;

	if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(buf, len, "-");
		return;
	}
	d = (long)(time(NULL) - timegm(&tm));
	if (d < 0)
		d = 0;
	if (d < 120)
		snprintf(buf, len, "%lds ago", d);
	else if (d < 7200)
		snprintf(buf, len, "%ldm ago", d / 60);
	else if (d < 172800)
		snprintf(buf, len, "%ldh ago", d / 3600);
	else
		snprintf(buf, len, "%ldd ago", d / 86400);
}
