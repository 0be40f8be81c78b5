/* VM definitions: shape first (a table of fields and JSON types, as
 * openapi.yaml's VmDefinition), then the VMM's own parser on the values,
 * then the controller's rules. The order matters: a wrong type must come
 * back as 400 whatever the VMM would say about it. */
#include "vmdef.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "jsonutil.h"
#include "config.h"
#include "util.h"

enum shape {
	SH_STRING, SH_INTEGER, SH_BOOL, SH_STRING_OR_INT, SH_STRING_OR_STRINGS,
	SH_OBJECT, SH_ARRAY_OF_OBJECTS, SH_ARRAY, SH_STRINGS, SH_STRING_MAP,
};

struct field {
	const char *name;
	enum shape shape;
	bool required;
	const struct fieldset *sub;    /* SH_OBJECT, SH_ARRAY_OF_OBJECTS */
};

struct fieldset {
	const struct field *fields;
	size_t n;
};

#define FIELDSET(a) { a, ARRAY_SIZE(a) }

static const struct field boot_fields[] = {
	{ "kernel", SH_STRING, true, NULL },
	{ "initrd", SH_STRING, false, NULL },
	{ "cmdline", SH_STRING, false, NULL },
	{ "protocol", SH_STRING, false, NULL },
};
static const struct fieldset boot_set = FIELDSET(boot_fields);

static const struct field disk_fields[] = {
	{ "path", SH_STRING, true, NULL },
	{ "format", SH_STRING, false, NULL },
	{ "cache", SH_STRING, false, NULL },
	{ "snapshot", SH_BOOL, false, NULL },
	{ "readonly", SH_BOOL, false, NULL },
	{ "serial", SH_STRING, false, NULL },
	{ "id", SH_STRING, false, NULL },
	{ "queues", SH_INTEGER, false, NULL },
};
static const struct fieldset disk_set = FIELDSET(disk_fields);

static const struct field placement_fields[] = {
	{ "host", SH_STRING, false, NULL },
	{ "cpu_flags", SH_STRINGS, false, NULL },
	{ "host_labels", SH_STRING_MAP, false, NULL },
	{ "affinity_group", SH_STRING, false, NULL },
	{ "anti_affinity_group", SH_STRING, false, NULL },
};
static const struct fieldset placement_set = FIELDSET(placement_fields);

/* drover-vmm takes more keys ("cpus", "serial", "control", "id"...): the
 * controller and the agent decide those, so the API does not. */
static const struct field top_fields[] = {
	{ "name", SH_STRING, true, NULL },
	{ "vcpus", SH_INTEGER, false, NULL },
	{ "memory", SH_STRING_OR_INT, false, NULL },
	{ "boot", SH_OBJECT, true, &boot_set },
	{ "disks", SH_ARRAY_OF_OBJECTS, false, &disk_set },
	{ "nics", SH_ARRAY, false, NULL },
	{ "labels", SH_STRING_MAP, false, NULL },
	{ "description", SH_STRING, false, NULL },
	{ "cpu-features", SH_STRING_OR_STRINGS, false, NULL },
	{ "placement", SH_OBJECT, false, &placement_set },
	{ "start", SH_BOOL, false, NULL },
};
static const struct fieldset top_set = FIELDSET(top_fields);

static int fail(int ret, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(int ret, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

static const char *shape_name(enum shape sh)
{
	switch (sh) {
	case SH_STRING: return "a string";
	case SH_INTEGER: return "an integer";
	case SH_BOOL: return "a boolean";
	case SH_STRING_OR_INT: return "a size string (\"512M\") or an integer (MiB)";
	case SH_STRING_OR_STRINGS: return "a string or an array of strings";
	case SH_OBJECT: return "an object";
	case SH_ARRAY_OF_OBJECTS: return "an array of objects";
	case SH_ARRAY: return "an array";
	case SH_STRINGS: return "an array of strings";
	case SH_STRING_MAP: return "an object of strings";
	}
	return "?";
}

static bool all_strings_array(const json_t *v)
{
	size_t i;
	json_t *item;

	json_array_foreach(v, i, item) {
		if (!json_is_string(item))
			return false;
	}
	return true;
}

static bool all_strings_object(const json_t *v)
{
	const char *k;
	json_t *item;

	json_object_foreach((json_t *)v, k, item) {
		if (!json_is_string(item))
			return false;
	}
	return true;
}

static bool shape_ok(const json_t *v, enum shape sh)
{
	switch (sh) {
	case SH_STRING: return json_is_string(v);
	case SH_INTEGER: return json_is_integer(v);
	case SH_BOOL: return json_is_boolean(v);
	case SH_STRING_OR_INT: return json_is_string(v) || json_is_integer(v);
	case SH_STRING_OR_STRINGS:
		return json_is_string(v) || (json_is_array(v) && all_strings_array(v));
	case SH_OBJECT: return json_is_object(v);
	case SH_ARRAY_OF_OBJECTS:
	case SH_ARRAY: return json_is_array(v);
	case SH_STRINGS: return json_is_array(v) && all_strings_array(v);
	case SH_STRING_MAP: return json_is_object(v) && all_strings_object(v);
	}
	return false;
}

static int check_shape(const json_t *obj, const struct fieldset *set, const char *where,
		       char *err, size_t errlen);

static int check_field(const json_t *v, const struct field *f, const char *path, char *err,
		       size_t errlen)
{
	size_t i;
	json_t *item;

	if (!shape_ok(v, f->shape))
		return fail(-EBADMSG, err, errlen, "field '%s' must be %s, not %s", path,
			    shape_name(f->shape), json_type_name(v));
	if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v))
		return fail(-EBADMSG, err, errlen, "field '%s' contains a NUL character", path);
	if (f->shape == SH_OBJECT)
		return check_shape(v, f->sub, path, err, errlen);
	if (f->shape != SH_ARRAY_OF_OBJECTS)
		return 0;
	json_array_foreach(v, i, item) {
		char sub[256];
		int ret;

		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		if (!json_is_object(item))
			return fail(-EBADMSG, err, errlen, "field '%s' must be an object, not %s",
				    sub, json_type_name(item));
		ret = check_shape(item, f->sub, sub, err, errlen);
		if (ret)
			return ret;
	}
	return 0;
}

/* where: "" at the top, else the path of obj ("boot", "disks[1]"). */
static int check_shape(const json_t *obj, const struct fieldset *set, const char *where,
		       char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		const struct field *f = NULL;
		char path[200];
		int ret;

		for (size_t i = 0; i < set->n && !f; i++) {
			if (!strcmp(set->fields[i].name, key))
				f = &set->fields[i];
		}
		snprintf(path, sizeof(path), "%s%s%s", where, *where ? "." : "", key);
		if (!f)
			return fail(-EBADMSG, err, errlen, "unknown field '%s'", path);
		ret = check_field(v, f, path, err, errlen);
		if (ret)
			return ret;
	}
	for (size_t i = 0; i < set->n; i++) {
		if (set->fields[i].required && !json_object_get(obj, set->fields[i].name))
			return fail(-EBADMSG, err, errlen, "missing field '%s%s%s'", where,
				    *where ? "." : "", set->fields[i].name);
	}
	return 0;
}

/* ---- the controller's own rules on values ---- */

static bool printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
	}
	return true;
}

/* Label keys: 1..63 of [A-Za-z0-9._/-]; values: up to 255 printable. */
static int check_labels(const json_t *obj, const char *where, struct vmdef_label *out,
			size_t *n, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	*n = 0;
	if (json_object_size(obj) > VMDEF_LABELS_MAX)
		return fail(-EINVAL, err, errlen, "'%s': %zu labels, at most %d", where,
			    json_object_size(obj), VMDEF_LABELS_MAX);
	json_object_foreach((json_t *)obj, key, v) {
		const char *val = json_string_value(v);

		if (!ctl_label_key_valid(key))
			return fail(-EINVAL, err, errlen, "'%s': label key '%s' must be 1 to 63 "
				    "letters, digits, '.', '_', '/' or '-'", where, key);
		if (strlen(val) > 255 || !printable(val))
			return fail(-EINVAL, err, errlen, "'%s.%s': a label value is at most 255 "
				    "printable characters", where, key);
		out[*n].key = key;
		out[*n].value = val;
		(*n)++;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_group(const char *name, const char *field, char *err, size_t errlen)
{
	if (!ctl_name_valid(name))
		return fail(-EINVAL, err, errlen, "'placement.%s': '%s' must be 1 to 63 letters, "
			    "digits, '.', '_' or '-', starting with a letter", field, name);
	return 0;
}

static int check_placement(const json_t *p, struct vmdef *def, char *err, size_t errlen)
{
	json_t *v;
	size_t i;
	int ret;

	if (!p)
		return 0;
	if ((v = json_object_get(p, "host"))) {
		def->placement.host = json_string_value(v);
		if (!*def->placement.host || !printable(def->placement.host))
			return fail(-EINVAL, err, errlen, "'placement.host': '%s' names no host",
				    def->placement.host);
	}
	if ((v = json_object_get(p, "cpu_flags"))) {
		json_t *item;

		if (json_array_size(v) > VMDEF_CPU_FLAGS_MAX)
			return fail(-EINVAL, err, errlen, "'placement.cpu_flags': %zu flags, at most "
				    "%d", json_array_size(v), VMDEF_CPU_FLAGS_MAX);
		json_array_foreach(v, i, item) {
			const char *flag = json_string_value(item);

			if (!*flag || strspn(flag, "abcdefghijklmnopqrstuvwxyz0123456789_.") !=
			    strlen(flag))
				return fail(-EINVAL, err, errlen, "'placement.cpu_flags[%zu]': '%s' is "
					    "no /proc/cpuinfo flag (lower-case letters, digits, '_')",
					    i, flag);
			def->placement.cpu_flags[def->placement.ncpu_flags++] = flag;
		}
		qsort(def->placement.cpu_flags, def->placement.ncpu_flags, sizeof(char *), cmp_str);
	}
	if ((v = json_object_get(p, "host_labels"))) {
		ret = check_labels(v, "placement.host_labels", def->placement.host_labels,
				   &def->placement.nhost_labels, err, errlen);
		if (ret)
			return ret;
	}
	if ((v = json_object_get(p, "affinity_group"))) {
		def->placement.affinity_group = json_string_value(v);
		ret = check_group(def->placement.affinity_group, "affinity_group", err, errlen);
		if (ret)
			return ret;
	}
	if ((v = json_object_get(p, "anti_affinity_group"))) {
		def->placement.anti_affinity_group = json_string_value(v);
		ret = check_group(def->placement.anti_affinity_group, "anti_affinity_group", err,
				  errlen);
		if (ret)
			return ret;
	}
	return 0;
}

static int check_rules(struct vmdef *def, char *err, size_t errlen)
{
	const json_t *doc = def->doc;
	json_t *v;
	int ret;

	def->name = json_string_value(json_object_get(doc, "name"));
	if (!ctl_name_valid(def->name))
		return fail(-EINVAL, err, errlen, "'name': '%s' must be 1 to 63 letters, digits, "
			    "'.', '_' or '-', starting with a letter", def->name);
	if ((v = json_object_get(doc, "description")) &&
	    json_string_length(v) > VMDEF_DESCRIPTION_MAX)
		return fail(-EINVAL, err, errlen, "'description': %zu characters, at most %d",
			    json_string_length(v), VMDEF_DESCRIPTION_MAX);
	if ((v = json_object_get(doc, "labels"))) {
		ret = check_labels(v, "labels", def->labels, &def->nlabels, err, errlen);
		if (ret)
			return ret;
	}
	return check_placement(json_object_get(doc, "placement"), def, err, errlen);
}

/* drover-vmm's parser judges the values, on the document it will get. */
static int check_with_vmm(struct vmdef *def, char *err, size_t errlen)
{
	struct vmm_config cfg;
	char *text = json_dumps(def->doc, JSON_COMPACT);
	int ret;

	if (!text)
		return -ENOMEM;
	vmm_config_init(&cfg);
	ret = vmm_config_from_json(&cfg, text, strlen(text), "definition", err, errlen);
	if (!ret) {
		def->vcpus = cfg.cpus;
		def->mem = cfg.memory;
	} else if (ret != -ENOMEM) {
		ret = -EINVAL;
	}
	vmm_config_free(&cfg);
	free(text);
	return ret;
}

int vmdef_parse(const json_t *doc, struct vmdef *def, char *err, size_t errlen)
{
	json_t *start;
	int ret;

	memset(def, 0, sizeof(*def));
	if (!json_is_object(doc))
		return fail(-EBADMSG, err, errlen, "the VM definition must be a JSON object, not %s",
			    json_type_name(doc));
	ret = check_shape(doc, &top_set, "", err, errlen);
	if (ret)
		return ret;
	def->doc = json_deep_copy(doc);
	if (!def->doc)
		return -ENOMEM;
	start = json_object_get(def->doc, "start");
	def->start = !start || json_is_true(start);
	json_object_del(def->doc, "start");
	ret = check_rules(def, err, errlen);
	if (!ret)
		ret = check_with_vmm(def, err, errlen);
	if (ret)
		vmdef_free(def);
	return ret;
}

void vmdef_free(struct vmdef *def)
{
	json_decref(def->doc);
	memset(def, 0, sizeof(*def));
}

char *vmdef_agent_json(const json_t *definition, const char *vm_id)
{
	json_t *copy = json_deep_copy(definition);
	char *text;

	if (!copy)
		return NULL;
	json_object_set_new(copy, "id", json_string(vm_id));
	text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(copy);
	return text;
}
