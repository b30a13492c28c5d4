/* libFuzzer target: the OpenFlow 1.3 decoder (src/network/openflow.c), as a
 * switch's bytes reach it: any input must parse or fail, never crash, hang
 * or trip a sanitizer; what decodes as a FLOW_MOD must encode again and
 * decode to the same flow.  Built and run by `make fuzz` (tests/fuzz/run). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "network/openflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fm_of_msg m;
	size_t need;
	while (size > 0 && fm_of_parse(data, size, &m, &need) == 0) {
		fm_of_features f;
		fm_of_flow flow, again;
		uint16_t t, c;
		char text[200];
		(void)fm_of_decode_features(&m, &f);
		(void)fm_of_decode_error(&m, &t, &c, text, sizeof(text));
		if (fm_of_decode_flow_mod(&m, &flow) == 0) {
			uint8_t buf[1024];
			fm_of_msg m2;
			size_t n = fm_of_encode_flow_mod(buf, sizeof(buf), m.xid, &flow);
			if (n == 0 || fm_of_parse(buf, n, &m2, &need) != 0 || fm_of_decode_flow_mod(&m2, &again) != 0 ||
			    again.cookie != flow.cookie || again.match.fields != flow.match.fields ||
			    again.nactions != flow.nactions)
				abort();
		}
		data += m.length;
		size -= m.length;
	}
	return 0;
}
