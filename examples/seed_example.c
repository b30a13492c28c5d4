/* The seed's Python snippet, in C, against a real FlexiMigrate daemon:
 *
 *   policies = [ {adaptive_load_balancing ...} ]
 *   flexi_migrate = FlexiMigrate(policies=policies)
 *   host1 = Host('host1', 16, 32768, 1000); host2 = Host('host2', ...)
 *   container1 = Container('container1', image, cpu_limit=4 (1 here), memory_limit=2048, storage_limit=50) on host1
 *   request = MigrationRequest('container1', host1, host2, MigrationStrategy.LIVE_MIGRATION)
 *   if flexi_migrate.decision_engine.enforce_policies(request):
 *       flexi_migrate.migration_manager.add_migration_request(request)
 *   flexi_migrate.run()
 *
 * Usage: seed-example SOCKET HOST1 HOST2 HOST2-ADDRESS IMAGE [HOST2-MEMORY-MIB]
 *   SOCKET         the local socket of HOST1's daemon (fleximigrated --socket)
 *   HOST2-ADDRESS  HOST2's daemon, HOST:PORT (its --listen)
 *   IMAGE          an image imported on HOST1 (fleximigrate image import)
 *   HOST2-MEMORY-MIB  what HOST2 declares (default the seed's 32768)
 * Exit status 0 when the migration completed, 1 when it failed or the
 * policies refused it, 2 on bad usage.  Build: cc seed_example.c $(pkg-config
 * --cflags --libs fleximigrate). */
#include <stdio.h>
#include <stdlib.h>

#include <fleximigrate.h>

/* The seed's policy, as the seed writes it. */
static const char policies[] =
	"[{\"policy_name\": \"adaptive_load_balancing\","
	"  \"CONTEXT\": [\"source_cpu_utilization\", \"destination_cpu_utilization\", \"time_of_day\","
	"               \"network_congestion_prob\", \"service_type\"],"
	"  \"CONDITIONS\": \"(source_cpu_utilization > 80 and destination_cpu_utilization < 50) or "
	"(time_of_day >= 18 and time_of_day <= 22 and service_type == \\\"critical\\\") or (network_congestion_prob < 0.2)\","
	"  \"ACTIONS\": [\"allow_migration\", \"set_priority(\\\"high\\\")\", \"trigger_load_balancer_reconfiguration\"],"
	"  \"CONSTRAINTS\": {\"max_concurrent_migrations\": 5, \"migration_duration\": 300},"
	"  \"PRIORITY\": 2}]";

int main(int argc, char **argv)
{
	char err[1024], why[1024], id[32];

	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: %s SOCKET HOST1 HOST2 HOST2-ADDRESS IMAGE [HOST2-MEMORY-MIB]\n", argv[0]);
		return 2;
	}
	flexi_migrate *fm = flexi_migrate_new(policies, argv[1], err, sizeof(err));
	if (!fm) {
		fprintf(stderr, "FlexiMigrate: %s\n", err);
		return 1;
	}
	/* the seed's hosts: 16 cores, 32 GiB, 1000 GiB each */
	flexi_host host1 = { .host_id = argv[2], .total_cpu = 16, .total_memory = 32768, .total_storage = 1000 };
	flexi_host host2 = { .host_id = argv[3], .address = argv[4], .total_cpu = 16,
			     .total_memory = argc == 7 ? atoi(argv[6]) : 32768, .total_storage = 1000 };
	/* the seed's container1 (2048 MiB, 50 GiB; its image is nginx, a web
	 * service: the policy reads service_type); its limit of 4 cores is 1
	 * here, since the destination's Resource Allocator reserves the limit
	 * and refuses more cores than the host has (our test hosts have 2).  It
	 * counts, so that the migration has a running process to move. */
	static const char *const counter[] = { "/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; "
					       "sleep 0.1; done", NULL };
	flexi_container container1 = { .container_id = "container1", .image = argv[5], .cpu_limit = 1, .memory_limit = 2048,
				       .storage_limit = 50, .host = argv[2], .command = counter, .service_type = "web" };
	if (flexi_migrate_add_host(fm, &host1) < 0 || flexi_migrate_add_host(fm, &host2) < 0 ||
	    flexi_migrate_add_container(fm, &container1) < 0) {
		fprintf(stderr, "FlexiMigrate: %s\n", flexi_migrate_last_error(fm));
		flexi_migrate_free(fm);
		return 1;
	}
	flexi_migration_request request = { .container_id = "container1", .source_host = argv[2],
					     .destination_host = argv[3], .migration_type = FLEXI_LIVE_MIGRATION };
	if (!flexi_migrate_enforce_policies(fm, &request, why, sizeof(why))) {
		printf("Policies refuse the migration: %s\n", why);
		flexi_migrate_free(fm);
		return 1;
	}
	printf("Policies allow the migration: %s\n", why);
	if (flexi_migrate_add_migration_request(fm, &request, id, sizeof(id)) < 0) {
		fprintf(stderr, "FlexiMigrate: %s\n", flexi_migrate_last_error(fm));
		flexi_migrate_free(fm);
		return 1;
	}
	printf("Migration %s requested\n", id);
	int failed = flexi_migrate_run(fm, NULL, NULL);
	if (failed != 0)
		fprintf(stderr, "FlexiMigrate: %s\n", flexi_migrate_last_error(fm));
	flexi_migrate_free(fm);
	return failed == 0 ? 0 : 1;
}
