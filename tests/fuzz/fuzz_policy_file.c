/* libFuzzer target: whole policy files (src/manager/policy.c: JSON in the
 * seed's format, each CONDITIONS parsed and typed against its CONTEXT).  Any
 * input must load or fail with an error, never crash, hang or trip a
 * sanitizer; a set that loads must decide, with or without values.  Built and
 * run by `make fuzz` (tests/fuzz/run). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manager/policy.h"

/* Every variable known, its value by its type; or none known. */
static bool lookup(void *opaque, const char *var, fm_cond_value *v)
{
	size_t n;
	const fm_policy_var_info *vars = fm_policy_vars(&n);
	*v = (fm_cond_value){ .known = opaque != NULL };
	for (size_t i = 0; i < n; i++)
		if (!strcmp(vars[i].name, var)) {
			v->num = 42;
			v->str = "critical";
			v->b = true;
		}
	return v->known;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fm_policy_set *s = NULL;
	fm_error err = FM_ERROR_INIT;
	if (fm_policy_set_parse((const char *)data, size, "fuzz", &s, &err) == 0) {
		fm_policy_decision d;
		fm_policy_decide(s, lookup, (void *)1, &d);
		fm_policy_decide(s, lookup, NULL, &d);
		for (size_t i = 0; i < s->n; i++)
			for (size_t k = 0; k < s->v[i].nactions; k++) {
				char buf[96];
				fm_policy_action_format(&s->v[i].actions[k], buf, sizeof(buf));
			}
		fm_policy_set_free(s);
	}
	fm_error_clear(&err);
	return 0;
}
