/* libldns, loaded only by a daemon that updates a DNS server (basic/dl.h).
 *
 * libldns brings OpenSSL's libcrypto and libssl: ~1.9 MiB resident in every
 * daemon that links it, used only by the DNS Manager (network/dns.c), which
 * loads it when a DNS server is configured (fm_dns_open).  Include this
 * header *instead of* <ldns/ldns.h>: the ldns_*() calls and ldns_rcodes below
 * it go through pointers that fm_ldns_acquire fills. */
#pragma once
#include <ldns/ldns.h>

#include "basic/dl.h"
#include "basic/error.h"

/* the functions, and the one table (ldns_rcodes) the DNS Manager reads */
#define FM_LDNS_SYMBOLS(X) \
	 X(ldns_dname_new_frm_str) X(ldns_get_errorstr_by_id) X(ldns_lookup_by_id) X(ldns_pkt_aa) \
	 X(ldns_pkt_free) X(ldns_pkt_get_rcode) X(ldns_pkt_rr_list_by_type) X(ldns_pkt_set_random_id) \
	 X(ldns_rdf2str) X(ldns_rdf_deep_free) X(ldns_rdf_new_frm_str) X(ldns_resolver_deep_free) \
	 X(ldns_resolver_new) X(ldns_resolver_push_nameserver) X(ldns_resolver_query_status) X(ldns_resolver_send_pkt) \
	 X(ldns_resolver_set_port) X(ldns_resolver_set_recursive) X(ldns_resolver_set_retry) X(ldns_resolver_set_timeout) \
	 X(ldns_resolver_set_tsig_algorithm) X(ldns_resolver_set_tsig_keydata) X(ldns_resolver_set_tsig_keyname) X(ldns_resolver_set_usevc) \
	 X(ldns_rr_list_deep_free) X(ldns_rr_list_new) X(ldns_rr_list_push_rr) X(ldns_rr_list_rr) \
	 X(ldns_rr_list_rr_count) X(ldns_rr_new) X(ldns_rr_new_frm_str) X(ldns_rr_rdf) \
	 X(ldns_rr_set_class) X(ldns_rr_set_owner) X(ldns_rr_set_ttl) X(ldns_rr_set_type) \
	 X(ldns_rr_ttl) X(ldns_update_pkt_new) X(ldns_update_pkt_tsig_add) X(ldns_rcodes)

FM_DL_DECLARE(FM_LDNS_SYMBOLS)

/* Loads libldns (reference counted); 0 or -errno with err filled. */
int fm_ldns_acquire(fm_error *err);
/* Drops a reference; the last one unloads the library. */
void fm_ldns_release(void);

#ifndef FM_LDNS_DL_IMPL
#define ldns_dname_new_frm_str fm_dl_ldns_dname_new_frm_str
#define ldns_get_errorstr_by_id fm_dl_ldns_get_errorstr_by_id
#define ldns_lookup_by_id fm_dl_ldns_lookup_by_id
#define ldns_pkt_aa fm_dl_ldns_pkt_aa
#define ldns_pkt_free fm_dl_ldns_pkt_free
#define ldns_pkt_get_rcode fm_dl_ldns_pkt_get_rcode
#define ldns_pkt_rr_list_by_type fm_dl_ldns_pkt_rr_list_by_type
#define ldns_pkt_set_random_id fm_dl_ldns_pkt_set_random_id
#define ldns_rdf2str fm_dl_ldns_rdf2str
#define ldns_rdf_deep_free fm_dl_ldns_rdf_deep_free
#define ldns_rdf_new_frm_str fm_dl_ldns_rdf_new_frm_str
#define ldns_resolver_deep_free fm_dl_ldns_resolver_deep_free
#define ldns_resolver_new fm_dl_ldns_resolver_new
#define ldns_resolver_push_nameserver fm_dl_ldns_resolver_push_nameserver
#define ldns_resolver_query_status fm_dl_ldns_resolver_query_status
#define ldns_resolver_send_pkt fm_dl_ldns_resolver_send_pkt
#define ldns_resolver_set_port fm_dl_ldns_resolver_set_port
#define ldns_resolver_set_recursive fm_dl_ldns_resolver_set_recursive
#define ldns_resolver_set_retry fm_dl_ldns_resolver_set_retry
#define ldns_resolver_set_timeout fm_dl_ldns_resolver_set_timeout
#define ldns_resolver_set_tsig_algorithm fm_dl_ldns_resolver_set_tsig_algorithm
#define ldns_resolver_set_tsig_keydata fm_dl_ldns_resolver_set_tsig_keydata
#define ldns_resolver_set_tsig_keyname fm_dl_ldns_resolver_set_tsig_keyname
#define ldns_resolver_set_usevc fm_dl_ldns_resolver_set_usevc
#define ldns_rr_list_deep_free fm_dl_ldns_rr_list_deep_free
#define ldns_rr_list_new fm_dl_ldns_rr_list_new
#define ldns_rr_list_push_rr fm_dl_ldns_rr_list_push_rr
#define ldns_rr_list_rr fm_dl_ldns_rr_list_rr
#define ldns_rr_list_rr_count fm_dl_ldns_rr_list_rr_count
#define ldns_rr_new fm_dl_ldns_rr_new
#define ldns_rr_new_frm_str fm_dl_ldns_rr_new_frm_str
#define ldns_rr_rdf fm_dl_ldns_rr_rdf
#define ldns_rr_set_class fm_dl_ldns_rr_set_class
#define ldns_rr_set_owner fm_dl_ldns_rr_set_owner
#define ldns_rr_set_ttl fm_dl_ldns_rr_set_ttl
#define ldns_rr_set_type fm_dl_ldns_rr_set_type
#define ldns_rr_ttl fm_dl_ldns_rr_ttl
#define ldns_update_pkt_new fm_dl_ldns_update_pkt_new
#define ldns_update_pkt_tsig_add fm_dl_ldns_update_pkt_tsig_add
#define ldns_rcodes (*fm_dl_ldns_rcodes)
#endif
