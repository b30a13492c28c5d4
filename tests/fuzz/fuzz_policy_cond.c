/* libFuzzer target: the policy CONDITIONS parser and evaluator
 * (src/manager/policy_cond.c).  Any input must parse or fail with an error,
 * never crash, hang or trip a sanitizer; what parses must evaluate.
 * Built and run by `make fuzz` (tests/fuzz/run). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manager/policy_cond.h"

static const fm_cond_var VARS[] = {
	{ "source_cpu_utilization", FM_COND_NUMBER }, { "destination_cpu_utilization", FM_COND_NUMBER },
	{ "time_of_day", FM_COND_NUMBER },            { "network_congestion_prob", FM_COND_NUMBER },
	{ "service_type", FM_COND_STRING },           { "cordoned", FM_COND_BOOL },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *src = malloc(size + 1);
	if (!src)
		return 0;
	memcpy(src, data, size);
	src[size] = 0;
	fm_cond *c = NULL;
	fm_error err = FM_ERROR_INIT;
	if (fm_cond_parse(src, VARS, sizeof(VARS) / sizeof(VARS[0]), &c, &err) == 0) {
		/* every value known, then one missing: both must end */
		fm_cond_value v[6] = { { true, 90, NULL, false }, { true, 40, NULL, false }, { true, 20, NULL, false },
				       { true, 0.1, NULL, false }, { true, 0, "critical", false }, { true, 0, NULL, true } };
		bool res;
		if (fm_cond_eval(c, v, &res, &err) < 0)
			abort();   /* all known: evaluation cannot fail */
		v[size % 6].known = false;
		(void)fm_cond_eval(c, v, &res, &err);
		fm_cond_free(c);
	}
	fm_error_clear(&err);
	free(src);
	return 0;
}
