#include "decision/optimizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double fm_place_util(const fm_place_host *h, double add_cpu, double add_mem)
{
	double c = h->cpu_cap > 0 ? (h->cpu_load + add_cpu) / h->cpu_cap : INFINITY;
	double m = h->mem_cap > 0 ? (h->mem_load + add_mem) / h->mem_cap : INFINITY;
	return c > m ? c : m;
}

bool fm_place_feasible(const fm_place_item *it, const fm_place_host *h, char *why, size_t len)
{
	if (h->cordoned)
		return snprintf(why, len, "cordoned"), false;
	if (it->arch && *it->arch && h->arch && *h->arch && strcmp(it->arch, h->arch) != 0)
		return snprintf(why, len, "CPU architecture %s, not %s", h->arch, it->arch), false;
	if (h->mem_load + it->mem > FM_PLACE_MEM_MAX * h->mem_cap)
		return snprintf(why, len, "memory: %.0f of %.0f MiB in use", h->mem_load / 1048576, h->mem_cap / 1048576), false;
	if (h->disk_free >= 0 && it->disk > h->disk_free)
		return snprintf(why, len, "disk: %.0f MiB free", h->disk_free / 1048576), false;
	return true;
}

int fm_place_best(const fm_place_item *it, const fm_place_host *h, size_t n, size_t from, double *util_after, char *why,
		  size_t len)
{
	int best = -1;
	double bu = INFINITY;
	size_t w = 0;
	if (len)
		why[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char r[160];
		if (i == from)
			continue;
		if (!fm_place_feasible(it, &h[i], r, sizeof(r))) {
			if (w < len)
				w += (size_t)snprintf(why + w, len - w, "%s%s: %s", w ? "; " : "", h[i].name, r);
			continue;
		}
		double u = fm_place_util(&h[i], it->cpu, it->mem);
		if (best < 0 || u < bu - 1e-9 || (fabs(u - bu) <= 1e-9 && h[i].link_bps > h[best].link_bps)) {
			best = (int)i;
			bu = u;
		}
	}
	*util_after = bu;
	return best;
}

double fm_place_objective(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, const int *assign)
{
	double cpu[n], mem[n], worst = 0;
	for (size_t j = 0; j < n; j++)
		cpu[j] = mem[j] = 0;
	for (size_t i = 0; i < k; i++) {
		char r[8];
		size_t j = (size_t)assign[i];
		if (assign[i] < 0 || j >= n)
			return INFINITY;
		cpu[j] += it[i].cpu;
		mem[j] += it[i].mem;
		fm_place_item all = it[i];
		all.mem = mem[j]; /* what has landed there so far must fit together */
		if (!fm_place_feasible(&all, &h[j], r, sizeof(r)))
			return INFINITY;
	}
	for (size_t j = 0; j < n; j++) {
		double u = fm_place_util(&h[j], cpu[j], mem[j]);
		worst = u > worst ? u : worst;
	}
	return worst;
}

/* The greedy's order: items by size relative to the hosts' average capacity. */
struct sort_ctx {
	const fm_place_item *it;
	double cpu_avg, mem_avg;
};

static double size_of(const struct sort_ctx *c, const fm_place_item *it)
{
	double cpu = c->cpu_avg > 0 ? it->cpu / c->cpu_avg : 0, mem = c->mem_avg > 0 ? it->mem / c->mem_avg : 0;
	return cpu > mem ? cpu : mem;
}

static int by_size_desc(const void *a, const void *b, void *opaque)
{
	const struct sort_ctx *c = opaque;
	int i = *(const int *)a, j = *(const int *)b;
	double x = size_of(c, &c->it[i]), y = size_of(c, &c->it[j]);
	return x < y ? 1 : x > y ? -1 : i - j;
}

double fm_place_greedy(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, int *assign)
{
	int order[k ? k : 1];
	fm_place_host cur[n ? n : 1];
	struct sort_ctx ctx = { .it = it };
	for (size_t j = 0; j < n; j++) {
		cur[j] = h[j];
		ctx.cpu_avg += h[j].cpu_cap / (double)n;
		ctx.mem_avg += h[j].mem_cap / (double)n;
	}
	for (size_t i = 0; i < k; i++)
		order[i] = (int)i;
	qsort_r(order, k, sizeof(int), by_size_desc, &ctx);
	for (size_t o = 0; o < k; o++) {
		const fm_place_item *x = &it[order[o]];
		int best = -1;
		double bu = INFINITY;
		for (size_t j = 0; j < n; j++) {
			char r[8];
			if (!fm_place_feasible(x, &cur[j], r, sizeof(r)))
				continue;
			double u = fm_place_util(&cur[j], x->cpu, x->mem);
			if (u < bu - 1e-12) {
				bu = u;
				best = (int)j;
			}
		}
		assign[order[o]] = best;
		if (best < 0)
			return INFINITY;
		cur[best].cpu_load += x->cpu;
		cur[best].mem_load += x->mem;
	}
	return fm_place_objective(it, k, h, n, assign);
}

double fm_place_exhaustive(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, int *assign)
{
	double total = pow((double)n, (double)k), best = INFINITY;
	int a[k ? k : 1];
	if (n == 0 || total > FM_PLACE_EXHAUSTIVE_MAX)
		return INFINITY;
	for (size_t i = 0; i < k; i++)
		a[i] = 0, assign[i] = -1;
	for (;;) {
		double v = fm_place_objective(it, k, h, n, a);
		if (v < best - 1e-12) {
			best = v;
			memcpy(assign, a, k * sizeof(int));
		}
		size_t i = 0;
		while (i < k && ++a[i] == (int)n)
			a[i++] = 0;
		if (i == k)
			break;
	}
	return best;
}
