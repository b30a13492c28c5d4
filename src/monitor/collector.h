/* Performance Metrics Collector: raw counters, read from procfs and cgroups.
 *
 * A sample is what the kernel counts at one moment (cumulative counters and
 * levels); rates come from two samples (monitor/monitor.h).  Every reader
 * takes the directory it reads from, so that unit tests can hand it a fake
 * tree (/proc, or a cgroup v1 or v2 layout) and the daemon the real one. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FM_MAX_IFACES 32

/* One network interface's counters (/proc/net/dev; a namespace's own). */
typedef struct fm_iface_sample {
	char name[16];
	uint64_t rx_bytes, rx_packets, rx_drops, rx_errors;
	uint64_t tx_bytes, tx_packets, tx_drops, tx_errors;
} fm_iface_sample;

typedef struct fm_netdev_sample {
	fm_iface_sample v[FM_MAX_IFACES];
	size_t n;
} fm_netdev_sample;

/* A host (or a network namespace, for the network part). */
typedef struct fm_host_sample {
	int64_t at_us;            /* monotonic */
	uint64_t cpu_total;       /* /proc/stat "cpu": all jiffies ... */
	uint64_t cpu_idle;        /* ... of which idle + iowait */
	int cpus;
	uint64_t mem_total, mem_available;   /* bytes */
	double load1;
	uint64_t tcp_out_segs, tcp_retrans_segs; /* /proc/net/snmp */
	fm_netdev_sample net;
} fm_host_sample;

/* procfs: "/proc" (or a fake tree).  The network part is that of the
 * namespace procfs's net/ shows: the daemon's own. */
int fm_host_sample_read(const char *procfs, fm_host_sample *s);
/* /proc/PID/net/dev (a container's namespace) or any net/dev file. */
int fm_netdev_read(const char *path, fm_netdev_sample *s);
const fm_iface_sample *fm_netdev_find(const fm_netdev_sample *s, const char *name);

/* Where a container's cgroup counters are: the v1 controllers' directories
 * (empty when absent) and the unified (v2) one.  v1 wins where both exist. */
typedef struct fm_cgroup_dirs {
	char cpuacct[512];
	char memory[512];
	char blkio[512];
	char unified[512];
} fm_cgroup_dirs;

typedef struct fm_cgroup_sample {
	int64_t at_us;
	uint64_t cpu_ns;            /* CPU time used, all CPUs */
	uint64_t mem_bytes;         /* memory in use (includes page cache) */
	uint64_t mem_limit;         /* 0: none */
	uint64_t io_read_bytes, io_write_bytes;
	bool has_cpu, has_mem, has_io;
	int version;                /* 1 or 2: where the CPU figure came from */
} fm_cgroup_sample;

/* 0 when at least the CPU or memory counter could be read; -ENOENT otherwise. */
int fm_cgroup_sample_read(const fm_cgroup_dirs *d, fm_cgroup_sample *s);
