#include "decision/workload.h"

void fm_workload_classify(const fm_workload_inputs *in, fm_workload_profile *out)
{
	out->cpu = in->cpu_cores / (in->cpu_limit_cores > 0 ? in->cpu_limit_cores : FM_WORKLOAD_REF_CPU_CORES);
	out->mem = in->mem_bytes / (in->mem_limit_bytes > 0 ? in->mem_limit_bytes : FM_WORKLOAD_REF_MEM_BYTES);
	out->io = in->io_bps / FM_WORKLOAD_REF_IO_BPS;
	double best = out->cpu;
	out->cls = FM_WORKLOAD_CPU;
	if (out->mem > best) {
		best = out->mem;
		out->cls = FM_WORKLOAD_MEMORY;
	}
	if (out->io > best) {
		best = out->io;
		out->cls = FM_WORKLOAD_IO;
	}
	if (!(best >= FM_WORKLOAD_BOUND))
		out->cls = FM_WORKLOAD_IDLE;
}

const char *fm_workload_class_name(fm_workload_class c)
{
	switch (c) {
	case FM_WORKLOAD_CPU: return "CPU-bound";
	case FM_WORKLOAD_MEMORY: return "memory-bound";
	case FM_WORKLOAD_IO: return "I/O-bound";
	default: return "idle";
	}
}
