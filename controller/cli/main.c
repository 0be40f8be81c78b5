/* drover: the operator's command line for droverd (cli.h). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static const char *env(const char *name)
{
	return getenv(name);
}

int main(int argc, char **argv)
{
	int ret;

	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "drover: libcurl could not start\n");
		return CLI_FAILED;
	}
	ret = cli_main(argc, argv, stdout, stderr, env);
	curl_global_cleanup();
	return ret;
}
