/* Drives the SDN Controller Interface (network/sdn.c) against a real switch
 * for tests/e2e/test_sdn.py:
 *
 *   sdn-probe TARGET install IP PORT [COOKIE-LOW]   a redirect flow for IP to PORT
 *   sdn-probe TARGET refused                        a flow the switch must refuse
 *   sdn-probe TARGET delete                         every flow of ours
 *   sdn-probe TARGET foreign                        try to delete a cookie not ours
 *   sdn-probe TARGET replay IP PORT                 install, say "installed", wait for
 *                                                   a line on stdin, replay, say "replayed"
 *   sdn-probe DB ports [IFACE]                      OVSDB: every interface (or one) with its
 *                                                   OpenFlow port and MAC
 *
 * Prints what happened; exit 0 on success, 1 on the error (printed). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "network/ovsdb.h"
#include "network/sdn.h"

static void redirect(fm_of_flow *f, const char *ip, uint32_t port, uint64_t low)
{
	struct in_addr a;
	inet_pton(AF_INET, ip, &a);
	fm_of_flow_init(f, FM_OFPFC_ADD);
	f->cookie = FM_SDN_COOKIE_BASE | low;
	f->priority = 200;
	f->match.fields = FM_OFM_ETH_TYPE | FM_OFM_IPV4_DST;
	f->match.eth_type = 0x0800;
	f->match.ipv4_dst = ntohl(a.s_addr);
	f->actions[0] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = port };
	f->nactions = 1;
}

int main(int argc, char **argv)
{
	fm_error e = FM_ERROR_INIT;
	fm_sdn *s;
	fm_of_flow f;
	int r;

	if (argc < 3)
		return 2;
	if (!strcmp(argv[2], "ports")) {
		fm_ovs_port *ports, one;
		size_t n = 1;
		r = argc > 3 ? fm_ovsdb_port(argv[1], argv[3], 3000, &one, &e) : fm_ovsdb_ports(argv[1], 3000, &ports, &n, &e);
		if (r < 0) {
			printf("error: %s\n", e.msg);
			return 1;
		}
		for (size_t i = 0; i < n; i++) {
			const fm_ovs_port *p = argc > 3 ? &one : &ports[i];
			printf("%s %lld %s\n", p->name, (long long)p->ofport, p->mac);
		}
		if (argc <= 3)
			free(ports);
		return 0;
	}
	if (fm_sdn_connect(argv[1], 0, &s, &e) < 0) {
		printf("error: %s\n", e.msg);
		return 1;
	}
	printf("connected: datapath %016llx\n", (unsigned long long)fm_sdn_datapath_id(s));
	if (!strcmp(argv[2], "install") && argc >= 5) {
		redirect(&f, argv[3], (uint32_t)atoi(argv[4]), argc > 5 ? strtoull(argv[5], NULL, 0) : 1);
		r = fm_sdn_flow(s, &f, &e);
	} else if (!strcmp(argv[2], "refused")) {
		/* ipv4_dst without eth_type=0x0800: OFPBMC_BAD_PREREQ */
		redirect(&f, "10.0.0.1", 1, 9);
		f.match.fields &= ~(unsigned)FM_OFM_ETH_TYPE;
		r = fm_sdn_flow(s, &f, &e);
	} else if (!strcmp(argv[2], "delete")) {
		r = fm_sdn_delete_cookie(s, FM_SDN_COOKIE_BASE, FM_SDN_COOKIE_MASK, &e);
	} else if (!strcmp(argv[2], "foreign")) {
		r = fm_sdn_delete_cookie(s, 0x1234, 0xffff, &e);
		if (r == 0) { /* the mask keeps it in our space: nothing of theirs can match */
			fm_of_flow_init(&f, FM_OFPFC_DELETE);
			f.cookie = 0x1234;
			f.cookie_mask = 0xffff;
			r = fm_sdn_flow(s, &f, &e);
		}
	} else if (!strcmp(argv[2], "replay") && argc >= 5) {
		redirect(&f, argv[3], (uint32_t)atoi(argv[4]), 1);
		r = fm_sdn_flow(s, &f, &e);
		redirect(&f, argv[3], (uint32_t)atoi(argv[4]), 2);
		f.match.fields |= FM_OFM_IN_PORT;
		f.match.in_port = 10;
		if (r == 0)
			r = fm_sdn_flow(s, &f, &e);
		if (r == 0) {
			char line[64];
			printf("installed\n");
			fflush(stdout);
			if (!fgets(line, sizeof(line), stdin))
				return 2;
			/* the old connection is dead: a barrier says so */
			if (fm_sdn_barrier(s, &e) < 0)
				printf("lost: %s\n", e.msg);
			fm_error_clear(&e);
			r = fm_sdn_replay(s, &e);
			if (r == 0)
				printf("replayed\n");
		}
	} else {
		return 2;
	}
	if (r < 0)
		printf("error: %s\n", e.msg);
	else
		printf("ok\n");
	fm_sdn_close(s);
	fm_error_clear(&e);
	return r < 0;
}
