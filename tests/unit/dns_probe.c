/* Drives the DNS Manager (network/dns.c) against a real server for
 * tests/e2e/test_dns.py:
 *   dns-probe SERVER KEYFILE get NAME
 *   dns-probe SERVER KEYFILE set ZONE NAME IP TTL    then polls until served:
 *                                                    prints update_ms and served_ms
 * Exit 0 on success, 1 with "error: ..." printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/util.h"
#include "network/dns.h"

int main(int argc, char **argv)
{
	fm_dns d;
	fm_error e = FM_ERROR_INIT;
	char ip[64];
	uint32_t ttl;
	if (argc < 5)
		return 2;
	if (fm_dns_open(argv[1], argv[2], 1500, &d, &e) < 0) {
		printf("error: %s\n", e.msg);
		return 1;
	}
	if (!strcmp(argv[3], "get")) {
		if (fm_dns_lookup(&d, argv[4], ip, sizeof(ip), &ttl, &e) < 0) {
			printf("error: %s\n", e.msg);
			return 1;
		}
		printf("%s %u\n", ip, ttl);
		return 0;
	}
	if (!strcmp(argv[3], "set") && argc == 8) {
		double ms;
		int64_t t0 = fm_now_mono_us();
		if (fm_dns_set(&d, argv[4], argv[5], argv[6], (uint32_t)atoi(argv[7]), &ms, &e) < 0) {
			printf("error: %s\n", e.msg);
			return 1;
		}
		/* how long until the server answers with it */
		for (int i = 0; i < 5000; i++) {
			fm_error q = FM_ERROR_INIT;
			if (fm_dns_lookup(&d, argv[5], ip, sizeof(ip), &ttl, &q) == 0 && !strcmp(ip, argv[6]) &&
			    ttl == (uint32_t)atoi(argv[7])) {
				printf("update_ms %.3f served_ms %.3f\n", ms, (double)(fm_now_mono_us() - t0) / 1000.0);
				return 0;
			}
			fm_error_clear(&q);
		}
		printf("error: never served\n");
		return 1;
	}
	return 2;
}
