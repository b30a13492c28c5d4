/* Drives the DNS Manager (network/dns.c) against a real server for
 * tests/e2e/test_dns.py:
 *   dns-probe SERVER KEYFILE get NAME
 *   dns-probe SERVER KEYFILE set ZONE NAME IP TTL    then polls until served:
 *                                                    prints update_ms and served_ms
 *   dns-probe SERVER KEYFILE series ZONE NAME TTL N MS  N updates in one process, MS
 *                                                    apart, as a daemon makes them (one
 *                                                    a migration), alternating two
 *                                                    addresses: a served_ms line each
 * Exit 0 on success, 1 with "error: ..." printed. */
#include <stdbool.h>
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
	int n = 0;
	const char *zone = argv[4], *name = argv[5];
	uint32_t want_ttl = 0;
	if (!strcmp(argv[3], "set") && argc == 8)
		n = 1, want_ttl = (uint32_t)atoi(argv[7]);
	else if (!strcmp(argv[3], "series") && argc == 9)
		n = atoi(argv[7]), want_ttl = (uint32_t)atoi(argv[6]);
	if (n <= 0)
		return 2;
	for (int k = 0; k < n; k++) {
		char want[32];
		if (k > 0 && argc == 9) /* the spacing of independent updates, not a stand-in for work */
			fm_sleep_us((int64_t)atoi(argv[8]) * 1000, NULL);
		snprintf(want, sizeof(want), "%s", !strcmp(argv[3], "set") ? argv[6] : k % 2 ? "10.77.0.101" : "10.77.0.100");
		double ms;
		int64_t t0 = fm_now_mono_us();
		if (fm_dns_set(&d, zone, name, want, want_ttl, &ms, &e) < 0) {
			printf("error: %s\n", e.msg);
			return 1;
		}
		/* how long until the server answers with it */
		bool served = false;
		for (int i = 0; i < 5000 && !served; i++) {
			fm_error q = FM_ERROR_INIT;
			served = fm_dns_lookup(&d, name, ip, sizeof(ip), &ttl, &q) == 0 && !strcmp(ip, want) && ttl == want_ttl;
			fm_error_clear(&q);
		}
		if (!served) {
			printf("error: never served\n");
			return 1;
		}
		printf("update_ms %.3f served_ms %.3f\n", ms, (double)(fm_now_mono_us() - t0) / 1000.0);
	}
	return 0;
}
