/* Decision Engine, Workload Analyzer: what kind of load a container is, from
 * its measured counters (Resource Monitor), and where its CPU and memory are
 * heading (decision/forecast.h).
 *
 * Classification: each resource's pressure is the container's use over a
 * reference: its own limit when it has one, else FM_WORKLOAD_REF_CPU_CORES,
 * FM_WORKLOAD_REF_MEM_BYTES, FM_WORKLOAD_REF_IO_BPS.  The class is the
 * resource under the highest pressure, when that pressure is at least
 * FM_WORKLOAD_BOUND; below it the container is idle.  Ties go CPU, memory,
 * I/O, in that order. */
#pragma once
#include <stddef.h>

#define FM_WORKLOAD_REF_CPU_CORES 1.0
#define FM_WORKLOAD_REF_MEM_BYTES (1024.0 * 1024 * 1024)
#define FM_WORKLOAD_REF_IO_BPS (50.0 * 1000 * 1000)
#define FM_WORKLOAD_BOUND 0.5

typedef enum fm_workload_class {
	FM_WORKLOAD_IDLE,
	FM_WORKLOAD_CPU,
	FM_WORKLOAD_MEMORY,
	FM_WORKLOAD_IO,
} fm_workload_class;

typedef struct fm_workload_inputs {
	double cpu_cores;        /* CPU in use, cores (mean of the window) */
	double cpu_limit_cores;  /* 0: none */
	double mem_bytes;        /* memory in use */
	double mem_limit_bytes;  /* 0: none */
	double io_bps;           /* block I/O, read + write, bytes/s */
} fm_workload_inputs;

typedef struct fm_workload_profile {
	fm_workload_class cls;
	double cpu, mem, io;     /* pressures (1 = at the reference) */
} fm_workload_profile;

void fm_workload_classify(const fm_workload_inputs *in, fm_workload_profile *out);
const char *fm_workload_class_name(fm_workload_class c);  /* "CPU-bound", ... */
