/* Unit tests: the Resource Monitor's readers (monitor/collector.c) against
 * fake procfs and cgroup trees (v1 and v2 layouts, written here), the
 * analyzer's windows, trends and congestion rule (monitor/analyzer.c), and
 * the monitor folding samples into rates and a Prometheus exposition
 * (monitor/monitor.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/util.h"
#include "monitor/analyzer.h"
#include "monitor/collector.h"
#include "monitor/monitor.h"

static char *fake_tree(void)
{
	char tmpl[] = "/tmp/fm-test-monitor.XXXXXX";
	return fm_xstrdup(mkdtemp(tmpl));
}

static void put(const char *dir, const char *file, const char *text)
{
	char *p = fm_xasprintf("%s/%s", dir, file);
	char *slash = strrchr(p, '/');
	*slash = '\0';
	assert_int_equal(fm_mkdir_p(p, 0700), 0);
	*slash = '/';
	assert_int_equal(fm_write_file_atomic(p, text, strlen(text), 0600), 0);
	free(p);
}

static const char NETDEV[] =
	"Inter-|   Receive                                                |  Transmit\n"
	" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	"    lo:     276       3    0    0    0     0          0         0      276       3    0    0    0     0       0          0\n"
	"  eth0: %llu   %llu    0    %llu    0     0          0         0  %llu   %llu    0    %llu    0     0       0          0\n";

/* A procfs with these counters. */
static void fake_proc(const char *dir, unsigned long long busy, unsigned long long idle, unsigned long long rx,
		      unsigned long long tx, unsigned long long pk, unsigned long long drops, unsigned long long segs,
		      unsigned long long retrans)
{
	char buf[2048];
	snprintf(buf, sizeof(buf), "cpu  %llu 0 0 %llu 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\n"
		 "intr 5\nctxt 9\n", busy, idle);
	put(dir, "stat", buf);
	put(dir, "meminfo", "MemTotal:       1000000 kB\nMemFree:         100000 kB\nMemAvailable:    250000 kB\n");
	put(dir, "loadavg", "1.50 0.80 0.20 2/300 12345\n");
	snprintf(buf, sizeof(buf), "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\n"
		 "Tcp: 1 200 %llu %llu 0\nUdp: InDatagrams\nUdp: 3\n", segs, retrans);
	put(dir, "net/snmp", buf);
	snprintf(buf, sizeof(buf), NETDEV, rx, pk, drops, tx, pk, drops);
	put(dir, "net/dev", buf);
}

static void test_host_sample(void **state)
{
	char *d = fake_tree();
	fm_host_sample s;
	fake_proc(d, 300, 700, 1000, 2000, 10, 1, 5000, 7);
	assert_int_equal(fm_host_sample_read(d, &s), 0);
	assert_int_equal(s.cpu_total, 1000);
	assert_int_equal(s.cpu_idle, 700);
	assert_int_equal(s.cpus, 2);
	assert_int_equal(s.mem_total, 1000000ULL * 1024);
	assert_int_equal(s.mem_available, 250000ULL * 1024);
	assert_true(fabs(s.load1 - 1.5) < 1e-9);
	assert_int_equal(s.tcp_out_segs, 5000);
	assert_int_equal(s.tcp_retrans_segs, 7);
	assert_int_equal(s.net.n, 2);
	const fm_iface_sample *e = fm_netdev_find(&s.net, "eth0");
	assert_non_null(e);
	assert_int_equal(e->rx_bytes, 1000);
	assert_int_equal(e->tx_bytes, 2000);
	assert_int_equal(e->rx_drops, 1);
	assert_null(fm_netdev_find(&s.net, "eth1"));
	/* no stat: an error, not zeros */
	char *p = fm_xasprintf("%s/stat", d);
	unlink(p);
	free(p);
	assert_true(fm_host_sample_read(d, &s) < 0);
	fm_rm_rf(d);
	free(d);
}

static void test_cgroup_v1_and_v2(void **state)
{
	char *d = fake_tree();
	fm_cgroup_dirs v1 = { 0 }, v2 = { 0 };
	fm_cgroup_sample s;
	snprintf(v1.cpuacct, sizeof(v1.cpuacct), "%s/cpuacct/fm/c1", d);
	snprintf(v1.memory, sizeof(v1.memory), "%s/memory/fm/c1", d);
	snprintf(v1.blkio, sizeof(v1.blkio), "%s/blkio/fm/c1", d);
	put(v1.cpuacct, "cpuacct.usage", "2500000000\n");
	put(v1.memory, "memory.usage_in_bytes", "10485760\n");
	put(v1.memory, "memory.limit_in_bytes", "9223372036854771712\n");
	put(v1.blkio, "blkio.throttle.io_service_bytes", "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n"
		  "8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\nTotal 12291\n");
	assert_int_equal(fm_cgroup_sample_read(&v1, &s), 0);
	assert_int_equal(s.version, 1);
	assert_int_equal(s.cpu_ns, 2500000000ULL);
	assert_int_equal(s.mem_bytes, 10485760);
	assert_int_equal(s.mem_limit, 0); /* "no limit" */
	assert_int_equal(s.io_read_bytes, 4097);
	assert_int_equal(s.io_write_bytes, 8194);

	snprintf(v2.unified, sizeof(v2.unified), "%s/unified/fm/c1", d);
	put(v2.unified, "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n");
	put(v2.unified, "memory.current", "2097152\n");
	put(v2.unified, "memory.max", "67108864\n");
	put(v2.unified, "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=5 dios=1\n259:0 rbytes=1 wbytes=2\n");
	assert_int_equal(fm_cgroup_sample_read(&v2, &s), 0);
	assert_int_equal(s.version, 2);
	assert_int_equal(s.cpu_ns, 1500000000ULL);
	assert_int_equal(s.mem_bytes, 2097152);
	assert_int_equal(s.mem_limit, 67108864);
	assert_int_equal(s.io_read_bytes, 101);
	assert_int_equal(s.io_write_bytes, 202);

	/* a hybrid host: v1 controllers win; nothing at all is -ENOENT */
	snprintf(v1.unified, sizeof(v1.unified), "%s", v2.unified);
	assert_int_equal(fm_cgroup_sample_read(&v1, &s), 0);
	assert_int_equal(s.cpu_ns, 2500000000ULL);
	fm_cgroup_dirs none = { 0 };
	snprintf(none.unified, sizeof(none.unified), "%s/nowhere", d);
	assert_int_equal(fm_cgroup_sample_read(&none, &s), -ENOENT);
	fm_rm_rf(d);
	free(d);
}

static void test_window(void **state)
{
	fm_window w = { .cap = 5 };
	fm_window_stats s;
	fm_window_stats_get(&w, &s);
	assert_int_equal(s.n, 0);
	/* 10, 20, ... one a second: trend 600 a minute */
	for (int i = 0; i < 8; i++)
		fm_window_push(&w, (int64_t)i * 1000000, 10.0 * (i + 1));
	fm_window_stats_get(&w, &s);
	assert_int_equal(s.n, 5); /* the last five: 40..80 */
	assert_true(fabs(s.last - 80) < 1e-9);
	assert_true(fabs(s.mean - 60) < 1e-9);
	assert_true(fabs(s.min - 40) < 1e-9);
	assert_true(fabs(s.max - 80) < 1e-9);
	assert_true(fabs(s.slope_per_min - 600) < 1e-6);
	assert_true(fabs(s.span_s - 4) < 1e-9);
	int64_t t;
	double v;
	fm_window_at(&w, 0, &t, &v);
	assert_int_equal(t, 3000000);
	assert_true(fabs(v - 40) < 1e-9);

	/* sustained: above the threshold for the whole span asked */
	fm_window h = { .cap = 60 };
	for (int i = 0; i < 40; i++)
		fm_window_push(&h, (int64_t)i * 1000000, i < 5 ? 20 : 95);
	assert_true(fm_window_sustained_above(&h, 85, 30));
	assert_false(fm_window_sustained_above(&h, 85, 36)); /* 5 s of 20 in the span */
	assert_false(fm_window_sustained_above(&h, 96, 1));
	fm_window_push(&h, 40000000, 50); /* a dip ends it */
	assert_false(fm_window_sustained_above(&h, 85, 30));
	fm_window short_one = { .cap = 60 };
	fm_window_push(&short_one, 0, 99);
	fm_window_push(&short_one, 1000000, 99);
	assert_false(fm_window_sustained_above(&short_one, 85, 30)); /* a spike, not yet sustained */
}

static void test_congestion(void **state)
{
	assert_true(fm_congestion_probability(-1, 0) == 0);          /* nothing known */
	assert_true(fabs(fm_congestion_probability(0.5, 0) - 0.03125) < 1e-12);
	assert_true(fabs(fm_congestion_probability(0.9, 0) - 0.59049) < 1e-12);
	assert_true(fm_congestion_probability(1.7, 0) == 1);         /* over capacity */
	assert_true(fabs(fm_congestion_probability(-1, 0.01) - 0.5) < 1e-12);
	assert_true(fm_congestion_probability(0.1, 0.05) == 1);
	assert_true(fm_congestion_probability(NAN, NAN) == 0);
	/* the larger of the two */
	assert_true(fabs(fm_congestion_probability(0.9, 0.002) - 0.59049) < 1e-12);
}

/* ------------------------------------------------------------ the monitor */

static char *g_cg;   /* the fake cgroup of the one fake container */

static int fake_targets(void *opaque, fm_monitor_target **out, size_t *n)
{
	*out = fm_xcalloc(1, sizeof(**out));
	snprintf((*out)[0].name, sizeof((*out)[0].name), "c1");
	snprintf((*out)[0].dirs.unified, sizeof((*out)[0].dirs.unified), "%s", g_cg);
	*n = 1;
	return 0;
}

static double fake_capacity(void *opaque, const char **origin)
{
	*origin = "fake";
	return 8000.0; /* bits/s: 1000 bytes a second */
}

static void test_monitor_rates_and_exposition(void **state)
{
	char *d = fake_tree();
	g_cg = fm_xasprintf("%s/cg", d);
	fm_monitor_source src = { fake_targets, fake_capacity, NULL };
	fm_monitor *m = fm_monitor_new(d, "eth0", &src);

	fake_proc(d, 0, 0, 0, 0, 0, 0, 0, 0);
	put(g_cg, "cpu.stat", "usage_usec 0\n");
	put(g_cg, "memory.current", "1000\n");
	fm_monitor_tick(m);
	/* a second later (as far as the counters go: the interval is what the
	 * clock says, so the expectations allow for it) */
	usleep(200000);
	fake_proc(d, 30, 70, 50, 10, 100, 0, 1000, 10);
	put(g_cg, "cpu.stat", "usage_usec 100000\n");
	put(g_cg, "memory.current", "3000\n");
	fm_monitor_tick(m);

	json_t *h = fm_monitor_host_json(m);
	json_t *cpu = json_object_get(h, "cpu_utilization_percent");
	assert_true(fabs(json_real_value(json_object_get(cpu, "last")) - 30) < 1e-9);
	assert_true(fabs(json_real_value(json_object_get(json_object_get(h, "memory_utilization_percent"), "last")) - 75) < 1e-9);
	json_t *up = json_object_get(h, "uplink");
	assert_string_equal(json_string_value(json_object_get(up, "interface")), "eth0");
	double rx = json_real_value(json_object_get(json_object_get(up, "rx_bps"), "last"));
	assert_true(rx > 400 * 0.5 && rx < 400 * 5 + 1); /* 50 bytes in ~0.2 s */
	/* 1000 segments, 10 retransmitted: loss 1 %, congestion 0.5 (or the
	 * utilisation's, when the busy link says more) */
	assert_true(fabs(json_real_value(json_object_get(json_object_get(up, "loss_ratio"), "last")) - 0.01) < 1e-9);
	double cong = json_real_value(json_object_get(json_object_get(h, "network_congestion_prob"), "last"));
	assert_true(cong >= 0.5 && cong <= 1);
	json_decref(h);

	json_t *c = fm_monitor_container_json(m, "c1", true);
	assert_non_null(c);
	assert_int_equal(json_integer_value(json_object_get(c, "cgroup_version")), 2);
	double cpct = json_real_value(json_object_get(json_object_get(c, "cpu_utilization_percent"), "last"));
	assert_true(cpct > 10 && cpct <= 50.0 + 1e-9); /* 0.1 s of CPU in >= 0.2 s */
	assert_true(json_real_value(json_object_get(json_object_get(c, "memory_bytes"), "last")) == 3000);
	json_t *ser = json_object_get(json_object_get(json_object_get(c, "series"), "memory_bytes"), "v");
	assert_int_equal(json_array_size(ser), 2);
	assert_true(json_real_value(json_array_get(ser, 0)) == 1000 && json_real_value(json_array_get(ser, 1)) == 3000);
	json_decref(c);
	assert_null(fm_monitor_container_json(m, "c2", false));

	char *t = fm_monitor_prometheus(m);
	assert_non_null(strstr(t, "# TYPE fleximigrate_host_cpu_utilization_ratio gauge\n"));
	assert_non_null(strstr(t, "fleximigrate_host_cpu_utilization_ratio{stat=\"last\"} 0.3\n"));
	assert_non_null(strstr(t, "fleximigrate_container_cpu_seconds_total{container=\"c1\"} 0.1\n"));
	assert_non_null(strstr(t, "fleximigrate_container_memory_bytes{container=\"c1\"} 3000\n"));
	assert_non_null(strstr(t, "fleximigrate_host_network_receive_bytes_total{interface=\"eth0\"} 50\n"));
	assert_non_null(strstr(t, "fleximigrate_uplink_capacity_bytes_per_second{interface=\"eth0\"} 1000\n"));
	free(t);

	/* label values are escaped */
	char *e = NULL;
	fm_prom_sample(&e, "x", 1, (const char *[]){ "k=a\"b\\c\nd", NULL });
	assert_string_equal(e, "x{k=\"a\\\"b\\\\c\\nd\"} 1\n");
	free(e);

	/* counters that went back (an interface re-created) give no negative rate */
	fake_proc(d, 10, 10, 5, 5, 1, 0, 10, 0);
	fm_monitor_tick(m);
	h = fm_monitor_host_json(m);
	assert_true(json_real_value(json_object_get(json_object_get(json_object_get(h, "uplink"), "rx_bps"), "last")) == 0);
	json_decref(h);
	fm_monitor_free(m);
	fm_rm_rf(d);
	free(d);
	free(g_cg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host_sample),
		cmocka_unit_test(test_cgroup_v1_and_v2),
		cmocka_unit_test(test_window),
		cmocka_unit_test(test_congestion),
		cmocka_unit_test(test_monitor_rates_and_exposition),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
