/* droverd serve's options: from the command line, from a JSON file
 * (--config FILE.json, whose keys are the options' names without "--"),
 * or both; the command line wins wherever --config appears. Unknown
 * options and keys are errors. */
#ifndef DROVER_CTL_OPTIONS_H
#define DROVER_CTL_OPTIONS_H

#include <stddef.h>

#include "ctl.h"

#define CTL_DEFAULT_LISTEN        "127.0.0.1:8080"
#define CTL_DEFAULT_AGENT_LISTEN  "0.0.0.0:7000"
#define CTL_DEFAULT_HEARTBEAT_S   15
#define CTL_DEFAULT_OP_TIMEOUT_S  120

void ctl_options_init(struct ctl_options *o);
void ctl_options_free(struct ctl_options *o);

/* argv are serve's arguments (after "serve"). 0, or -EINVAL with err
 * naming the option or key and the value; 1 when --help was asked. */
int ctl_options_parse(struct ctl_options *o, int argc, char **argv, char *err, size_t errlen);

const char *ctl_options_usage(void);

#endif
