/*
 * udpgen: offers a bounded stream of UDP datagrams to a multicast group as fast as it can
 * (sendmmsg batches), or at a set rate.
 *
 * Every datagram starts with a header the receiver (udprecv) reads:
 *   u64 sequence number, u64 send time (CLOCK_MONOTONIC, ns), u32 magic  (little endian)
 * and is padded to --size bytes of UDP payload.
 *
 * --dst is GROUP:PORT for IPv4 and [GROUP]:PORT for IPv6 (or a unicast address in either form);
 * --src, of the same family, is the local address sent from: its interface is the multicast
 * output interface (IP_MULTICAST_IF, or IPV6_MULTICAST_IF with that interface's index).
 *
 * It stops after --count datagrams or --duration seconds, whichever comes first, and prints one
 * line of key=value figures on stdout: sent, seconds, pps, errors (datagrams the kernel refused).
 *
 * With --rate, datagrams are sent when due (busy-waiting the last stretch), at most --batch per
 * call; each one is stamped just before its call, so its time is at most one batch early.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ifaddrs.h>
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

#define MAGIC 0x46524c59u /* "FRLY" */
#define MAX_BATCH 1024
#define MAX_FLOWS 64
#define MAX_SIZE 9000

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: udpgen --dst GROUP:PORT|[GROUP6]:PORT [--src ADDR] [--size BYTES] [--count N]\n"
		"              [--duration SECONDS] [--rate PPS] [--batch N] [--flows N]\n"
		"              [--cpu K] [--ttl T (IPv6: the hop limit)]\n");
	exit(2);
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

/* Index of the interface that holds IPv6 address `address`, 0 if none does. */
static unsigned interface_of(const struct in6_addr *address)
{
	struct ifaddrs *list, *entry;
	unsigned index = 0;
	if (getifaddrs(&list) != 0)
		die("getifaddrs");
	for (entry = list; entry && !index; entry = entry->ifa_next) {
		if (!entry->ifa_addr || entry->ifa_addr->sa_family != AF_INET6)
			continue;
		const struct sockaddr_in6 *own = (const struct sockaddr_in6 *)entry->ifa_addr;
		if (memcmp(&own->sin6_addr, address, sizeof *address) == 0)
			index = if_nametoindex(entry->ifa_name);
	}
	freeifaddrs(list);
	return index;
}

/*
 * Parses GROUP:PORT (IPv4) or [GROUP]:PORT (IPv6) into `to`; returns its length, 0 if malformed.
 */
static socklen_t parse_destination(const char *text, struct sockaddr_storage *to)
{
	char host[INET6_ADDRSTRLEN];
	const char *end, *port;
	if (text[0] == '[') {
		end = strchr(text, ']');
		if (!end || end[1] != ':')
			return 0;
		text++;
		port = end + 2;
	} else {
		end = strrchr(text, ':');
		if (!end)
			return 0;
		port = end + 1;
	}
	if ((size_t)(end - text) >= sizeof host)
		return 0;
	memcpy(host, text, (size_t)(end - text));
	host[end - text] = 0;
	uint16_t number = htons((uint16_t)atoi(port));
	memset(to, 0, sizeof *to);
	struct sockaddr_in *v4 = (struct sockaddr_in *)to;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)to;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = number;
		return sizeof *v4;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = number;
		return sizeof *v6;
	}
	return 0;
}

/* Sets the hop limit, multicast loop off and the source of one IPv6 socket. */
static void setup_ipv6(int fd, long hops, const char *src)
{
	int value = (int)hops;
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &value, sizeof value) != 0)
		die("IPV6_MULTICAST_HOPS");
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &value, sizeof value) != 0)
		die("IPV6_UNICAST_HOPS");
	value = 0;
	setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &value, sizeof value);
	if (!src)
		return;
	struct sockaddr_in6 local = {.sin6_family = AF_INET6};
	if (inet_pton(AF_INET6, src, &local.sin6_addr) != 1)
		usage();
	unsigned index = interface_of(&local.sin6_addr);
	if (index == 0) {
		fprintf(stderr, "udpgen: no interface holds %s\n", src);
		exit(1);
	}
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &index, sizeof index) != 0)
		die("IPV6_MULTICAST_IF");
	if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0)
		die("bind");
}

/* Sets the TTL, multicast loop off and the source of one IPv4 socket. */
static void setup_ipv4(int fd, long ttl, const char *src)
{
	int value = (int)ttl;
	if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &value, sizeof value) != 0)
		die("IP_MULTICAST_TTL");
	value = 0;
	setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &value, sizeof value);
	if (!src)
		return;
	struct in_addr source;
	if (inet_pton(AF_INET, src, &source) != 1)
		usage();
	if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &source, sizeof source) != 0)
		die("IP_MULTICAST_IF");
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr = source};
	if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0)
		die("bind");
}

int main(int argc, char **argv)
{
	const char *dst = NULL, *src = NULL;
	long size = 64, batch = 64, flows = 1, cpu = -1, ttl = 8;
	double duration = 10, rate = 0;
	unsigned long long count = 1000000;
	static const struct option options[] = {
		{"dst", required_argument, NULL, 'd'},    {"src", required_argument, NULL, 's'},
		{"size", required_argument, NULL, 'z'},   {"count", required_argument, NULL, 'n'},
		{"duration", required_argument, NULL, 't'}, {"rate", required_argument, NULL, 'r'},
		{"batch", required_argument, NULL, 'b'},  {"flows", required_argument, NULL, 'f'},
		{"cpu", required_argument, NULL, 'c'},    {"ttl", required_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'd': dst = optarg; break;
		case 's': src = optarg; break;
		case 'z': size = atol(optarg); break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 't': duration = atof(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'b': batch = atol(optarg); break;
		case 'f': flows = atol(optarg); break;
		case 'c': cpu = atol(optarg); break;
		case 'l': ttl = atol(optarg); break;
		default: usage();
		}
	}
	if (!dst || size < 20 || size > MAX_SIZE || batch < 1 || batch > MAX_BATCH || flows < 1 ||
	    flows > MAX_FLOWS || duration <= 0 || rate < 0)
		usage();

	struct sockaddr_storage to;
	socklen_t to_length = parse_destination(dst, &to);
	if (to_length == 0)
		usage();

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((int)cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0)
			die("sched_setaffinity");
	}

	/* One socket per flow: distinct source ports, so hash fanout has flows to spread. */
	int fds[MAX_FLOWS];
	for (long f = 0; f < flows; f++) {
		int fd = socket(to.ss_family, SOCK_DGRAM, 0);
		if (fd < 0)
			die("socket");
		if (to.ss_family == AF_INET6)
			setup_ipv6(fd, ttl, src);
		else
			setup_ipv4(fd, ttl, src);
		int value = 4 << 20;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &value, sizeof value);
		if (connect(fd, (struct sockaddr *)&to, to_length) != 0)
			die("connect");
		fds[f] = fd;
	}

	static unsigned char buffers[MAX_BATCH][MAX_SIZE];
	static struct mmsghdr messages[MAX_BATCH];
	static struct iovec iovs[MAX_BATCH];
	for (long i = 0; i < batch; i++) {
		memset(buffers[i], 0x5a, (size_t)size);
		iovs[i].iov_base = buffers[i];
		iovs[i].iov_len = (size_t)size;
		messages[i].msg_hdr.msg_iov = &iovs[i];
		messages[i].msg_hdr.msg_iovlen = 1;
	}

	const uint64_t start = now_ns();
	const uint64_t deadline = start + (uint64_t)(duration * 1e9);
	const double interval = rate > 0 ? 1e9 / rate : 0;
	unsigned long long sent = 0, errors = 0, calls = 0;
	uint64_t now = start;
	long flow = 0;
	while (sent < count && now < deadline) {
		long n = batch;
		if (count - sent < (unsigned long long)n)
			n = (long)(count - sent);
		if (rate > 0) {
			/* Datagrams due by now; wait for the next one if none is. */
			uint64_t due_at = start + (uint64_t)((double)sent * interval);
			while (now < due_at) {
				if (due_at - now > 200000) {
					struct timespec nap = {0, (long)(due_at - now - 100000)};
					nanosleep(&nap, NULL);
				}
				now = now_ns();
			}
			unsigned long long due = (unsigned long long)((double)(now - start) / interval) + 1;
			if (due > sent && due - sent < (unsigned long long)n)
				n = (long)(due - sent);
		}
		uint64_t stamp = now_ns();
		for (long i = 0; i < n; i++) {
			uint64_t seq = sent + (uint64_t)i;
			uint32_t magic = MAGIC;
			memcpy(buffers[i], &seq, 8);
			memcpy(buffers[i] + 8, &stamp, 8);
			memcpy(buffers[i] + 16, &magic, 4);
		}
		int done = sendmmsg(fds[flow], messages, (unsigned)n, 0);
		calls++;
		if (done < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
				die("sendmmsg");
			errors += (unsigned long long)n;
			done = 0;
		} else if (done < n) {
			errors += (unsigned long long)(n - done);
		}
		/* A refused datagram still used its sequence number: the receiver sees a gap. */
		sent += (unsigned long long)n;
		flow = (flow + 1) % flows;
		now = now_ns();
	}
	double seconds = (double)(now - start) / 1e9;
	unsigned long long accepted = sent - errors;
	printf("sent=%llu accepted=%llu errors=%llu calls=%llu seconds=%.6f pps=%.0f cpu=%.3f\n", sent,
	       accepted, errors, calls, seconds, seconds > 0 ? (double)accepted / seconds : 0.0,
	       cpu_seconds());
	return 0;
}
