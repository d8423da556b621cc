/*
 * udprecv: counts the datagrams udpgen sent that reach a UDP port, and optionally measures their
 * latency: the kernel's receive timestamp (SO_TIMESTAMPNS) minus the send time in the payload.
 *
 * It joins --group on every --join interface (one socket; copies arriving over several
 * interfaces all count): an IPv4 group with IP_ADD_MEMBERSHIP, an IPv6 one (its family is read
 * from the address) with IPV6_JOIN_GROUP. Without --group it listens on --bind ADDR (a unicast
 * address of either family) or, without that, on every IPv4 address. It signals readiness by
 * creating --ready FILE, and stops --idle-ms after the last datagram (once one has arrived) or
 * after --max-seconds. It prints one line of
 * key=value figures on stdout: received, foreign (datagrams without udpgen's header), and with
 * --latency the 50th, 99th and 99.9th percentile and the maximum in microseconds.
 *
 * SO_TIMESTAMPNS is CLOCK_REALTIME and the payload carries CLOCK_MONOTONIC: the offset between
 * the two clocks is read once at start (the narrowest of several bracketed readings).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x46524c59u
#define BATCH 256
#define SLOT 2048
#define MAX_JOINS 8

static int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + (int64_t)ts.tv_nsec;
}

/* CPU seconds (user + system) this process has used, softirq work done in its context included. */
static double cpu_seconds(void)
{
	struct rusage usage;
	getrusage(RUSAGE_SELF, &usage);
	return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
	       (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: udprecv --port P [--group G --join IF ... | --bind ADDR] [--latency]\n"
			"               [--idle-ms MS]"
			"               [--max-seconds S] [--warmup-ms MS] [--ready FILE] [--cpu K]\n");
	exit(2);
}

static int compare(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double percentile_us(const int64_t *sorted, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t index = (size_t)(p * (double)(n - 1) + 0.5);
	return (double)sorted[index] / 1000.0;
}

int main(int argc, char **argv)
{
	const char *group = NULL, *ready = NULL, *bind_to = NULL;
	const char *joins[MAX_JOINS];
	int njoins = 0, latency = 0, port = 0;
	long idle_ms = 500, warmup_ms = 0, cpu = -1;
	double max_seconds = 30;
	static const struct option options[] = {
		{"port", required_argument, NULL, 'p'},   {"group", required_argument, NULL, 'g'},
		{"join", required_argument, NULL, 'j'},   {"latency", no_argument, NULL, 'l'},
		{"idle-ms", required_argument, NULL, 'i'}, {"max-seconds", required_argument, NULL, 'm'},
		{"warmup-ms", required_argument, NULL, 'w'}, {"ready", required_argument, NULL, 'r'},
		{"cpu", required_argument, NULL, 'c'},    {"bind", required_argument, NULL, 'b'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'g': group = optarg; break;
		case 'j':
			if (njoins == MAX_JOINS)
				usage();
			joins[njoins++] = optarg;
			break;
		case 'l': latency = 1; break;
		case 'i': idle_ms = atol(optarg); break;
		case 'm': max_seconds = atof(optarg); break;
		case 'w': warmup_ms = atol(optarg); break;
		case 'r': ready = optarg; break;
		case 'c': cpu = atol(optarg); break;
		case 'b': bind_to = optarg; break;
		default: usage();
		}
	}
	if (port <= 0 || port > 65535 || (njoins > 0 && !group) || (group && bind_to))
		usage();
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((int)cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0)
			die("sched_setaffinity");
	}

	/* The family is the group's, or the bound address's; IPv4 when neither is given. */
	const char *address = group ? group : bind_to;
	struct sockaddr_storage local;
	socklen_t local_length;
	memset(&local, 0, sizeof local);
	struct sockaddr_in *local4 = (struct sockaddr_in *)&local;
	struct sockaddr_in6 *local6 = (struct sockaddr_in6 *)&local;
	struct in_addr group4;
	struct in6_addr group6;
	int family;
	if (address && inet_pton(AF_INET6, address, &group6) == 1) {
		family = AF_INET6;
		local6->sin6_family = AF_INET6;
		local6->sin6_port = htons((uint16_t)port);
		local6->sin6_addr = bind_to ? group6 : in6addr_any;
		local_length = sizeof *local6;
	} else if (!address || inet_pton(AF_INET, address, &group4) == 1) {
		family = AF_INET;
		local4->sin_family = AF_INET;
		local4->sin_port = htons((uint16_t)port);
		local4->sin_addr.s_addr = bind_to ? group4.s_addr : htonl(INADDR_ANY);
		local_length = sizeof *local4;
	} else {
		usage();
	}

	int fd = socket(family, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
		die("IPV6_V6ONLY");
	int rcvbuf = 32 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	if (latency && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0)
		die("SO_TIMESTAMPNS");
	if (bind(fd, (struct sockaddr *)&local, local_length) != 0)
		die("bind");
	for (int i = 0; i < njoins; i++) {
		int index = (int)if_nametoindex(joins[i]);
		if (index == 0)
			usage();
		if (family == AF_INET6) {
			struct ipv6_mreq request = {.ipv6mr_multiaddr = group6,
						    .ipv6mr_interface = (unsigned)index};
			if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &request, sizeof request) != 0)
				die("IPV6_JOIN_GROUP");
		} else {
			struct ip_mreqn request = {.imr_multiaddr = group4, .imr_ifindex = index};
			if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &request, sizeof request) != 0)
				die("IP_ADD_MEMBERSHIP");
		}
	}
	struct timeval tick = {0, 100000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);

	/* CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of several bracketed readings. */
	int64_t offset = 0, best = INT64_MAX;
	for (int i = 0; i < 50; i++) {
		int64_t before = clock_ns(CLOCK_MONOTONIC);
		int64_t real = clock_ns(CLOCK_REALTIME);
		int64_t after = clock_ns(CLOCK_MONOTONIC);
		if (after - before < best) {
			best = after - before;
			offset = real - (before + after) / 2;
		}
	}

	static unsigned char buffers[BATCH][SLOT];
	static char controls[BATCH][CMSG_SPACE(sizeof(struct timespec))];
	static struct mmsghdr messages[BATCH];
	static struct iovec iovs[BATCH];
	size_t capacity = latency ? (1u << 20) : 0, samples = 0;
	int64_t *latencies = latency ? malloc(capacity * sizeof(int64_t)) : NULL;
	if (latency && !latencies)
		die("malloc");

	if (ready) {
		int marker = open(ready, O_CREAT | O_WRONLY | O_TRUNC, 0644);
		if (marker < 0)
			die("ready file");
		close(marker);
	}

	const int64_t start = clock_ns(CLOCK_MONOTONIC);
	const int64_t deadline = start + (int64_t)(max_seconds * 1e9);
	int64_t last = 0, first_sent = -1, warmup_ns = warmup_ms * 1000000ll;
	unsigned long long received = 0, foreign = 0, skipped = 0;
	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iovs[i].iov_base = buffers[i];
			iovs[i].iov_len = SLOT;
			memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
			messages[i].msg_hdr.msg_iov = &iovs[i];
			messages[i].msg_hdr.msg_iovlen = 1;
			if (latency) {
				messages[i].msg_hdr.msg_control = controls[i];
				messages[i].msg_hdr.msg_controllen = sizeof controls[i];
			}
		}
		int n = recvmmsg(fd, messages, BATCH, MSG_WAITFORONE, NULL);
		int64_t now = clock_ns(CLOCK_MONOTONIC);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				die("recvmmsg");
			n = 0;
		}
		for (int i = 0; i < n; i++) {
			uint32_t magic;
			uint64_t sent_at;
			if (messages[i].msg_len < 20) {
				foreign++;
				continue;
			}
			memcpy(&magic, buffers[i] + 16, 4);
			if (magic != MAGIC) {
				foreign++;
				continue;
			}
			received++;
			if (!latency)
				continue;
			memcpy(&sent_at, buffers[i] + 8, 8);
			if (first_sent < 0)
				first_sent = (int64_t)sent_at;
			if ((int64_t)sent_at - first_sent < warmup_ns) {
				skipped++;
				continue;
			}
			struct cmsghdr *cmsg;
			for (cmsg = CMSG_FIRSTHDR(&messages[i].msg_hdr); cmsg;
			     cmsg = CMSG_NXTHDR(&messages[i].msg_hdr, cmsg)) {
				if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_TIMESTAMPNS) {
					struct timespec ts;
					memcpy(&ts, CMSG_DATA(cmsg), sizeof ts);
					int64_t arrived = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec - offset;
					if (samples == capacity) {
						capacity *= 2;
						latencies = realloc(latencies, capacity * sizeof(int64_t));
						if (!latencies)
							die("realloc");
					}
					latencies[samples++] = arrived - (int64_t)sent_at;
				}
			}
		}
		if (n > 0)
			last = now;
		if (now >= deadline || (last > 0 && now - last > idle_ms * 1000000ll))
			break;
	}
	printf("received=%llu foreign=%llu cpu=%.3f", received, foreign, cpu_seconds());
	if (latency) {
		qsort(latencies, samples, sizeof(int64_t), compare);
		printf(" samples=%zu skipped=%llu p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f", samples,
		       skipped, percentile_us(latencies, samples, 0.50),
		       percentile_us(latencies, samples, 0.99), percentile_us(latencies, samples, 0.999),
		       samples ? (double)latencies[samples - 1] / 1000.0 : 0.0);
	}
	printf("\n");
	return 0;
}
