/* What the CLI prints: tables and "key: value" lists for people, the API's
 * own JSON with -o json. A column names a field of the API object by a
 * dotted path ("allocated.vcpus") and may format it. */
#ifndef DROVER_CLI_OUTPUT_H
#define DROVER_CLI_OUTPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

struct cli_column {
	const char *header;
	const char *path;
	/* NULL: the value as text (see output_value). */
	void (*format)(const json_t *obj, const json_t *v, char *buf, size_t len);
};

/* The field at a dotted path, or NULL. */
const json_t *output_get(const json_t *obj, const char *path);
/* A JSON value as one short text: strings as they are, numbers, yes/no,
 * "-" for null or missing, objects as k=v,k=v, arrays joined by commas. */
void output_value(const json_t *v, char *buf, size_t len);
/* One row per item, columns as wide as their widest cell. */
void output_table(FILE *f, const json_t *items, const struct cli_column *cols, size_t ncols);
/* "Header:  value" lines for one object. */
void output_fields(FILE *f, const json_t *obj, const struct cli_column *rows, size_t nrows);
void output_json(FILE *f, const json_t *v);

/* Formatters shared by the objects' columns. */
void output_mib(const json_t *obj, const json_t *v, char *buf, size_t len);     /* 2048 -> 2.0G */
void output_age(const json_t *obj, const json_t *v, char *buf, size_t len);     /* RFC 3339 -> 5m ago */

#endif
