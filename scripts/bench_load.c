/* bench_load.c: the load of scripts/bench_watch.py, compiled there with cc.
 *
 *   bench_load PORT RATE SECONDS INCIDENTS
 *
 * A server thread accepts on 127.0.0.1:PORT; the client opens RATE connections a
 * second for SECONDS (paced, as fast as it can when it falls behind). A healthy
 * connection: the client sends a 64-byte request, the server answers 100 bytes and
 * closes, the client reads to EOF and closes. INCIDENTS of them, evenly spread, are
 * the half-close: the server closes without answering, the client reads the FIN,
 * then writes twice: the first write succeeds, the peer answers it with an RST, the
 * second fails with EPIPE (SIGPIPE ignored). Prints "incident PORT" per incident
 * (the client's local port) and a last line
 * "done CONNECTIONS SECONDS_TAKEN FAILURES".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int listen_fd;

static void *serve(void *arg)
{
	char buf[512], reply[100];

	(void)arg;
	memset(reply, 'r', sizeof(reply));
	for (;;) {
		int c = accept(listen_fd, NULL, NULL);
		ssize_t n;

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;
		}
		n = read(c, buf, sizeof(buf));
		if (n > 0 && buf[0] != 'I')
			(void)!write(c, reply, sizeof(reply));
		close(c);
	}
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = {0};
	pthread_t server;
	char req[64], buf[512];
	int one = 1, port, rate, incidents;
	long long total, every, i, start, failures = 0;
	double seconds;

	if (argc != 5) {
		fprintf(stderr, "usage: %s PORT RATE SECONDS INCIDENTS\n", argv[0]);
		return 2;
	}
	port = atoi(argv[1]);
	rate = atoi(argv[2]);
	seconds = atof(argv[3]);
	incidents = atoi(argv[4]);
	total = (long long)(rate * seconds);
	every = incidents > 0 ? total / incidents : 0;
	signal(SIGPIPE, SIG_IGN);
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(listen_fd, 4096)) {
		perror("bind/listen");
		return 1;
	}
	pthread_create(&server, NULL, serve, NULL);
	start = now_ns();
	for (i = 0; i < total; i++) {
		long long due = start + i * 1000000000LL / rate, t = now_ns();
		int incident = every && i % every == every / 2 && i / every < incidents;
		int fd;
		ssize_t n;

		if (t < due) {
			struct timespec d = {(due - t) / 1000000000LL, (due - t) % 1000000000LL};
			nanosleep(&d, NULL);
		}
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
			failures++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		memset(req, incident ? 'I' : 'H', sizeof(req));
		if (write(fd, req, sizeof(req)) != sizeof(req))
			failures++;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			;
		if (incident) {
			struct sockaddr_in me;
			socklen_t len = sizeof(me);

			getsockname(fd, (struct sockaddr *)&me, &len);
			if (write(fd, "hello\n", 6) != 6)
				failures++;
			usleep(2000); /* the peer's RST arrives */
			if (write(fd, "hello\n", 6) != -1 || errno != EPIPE)
				failures++;
			printf("incident %d\n", ntohs(me.sin_port));
		}
		close(fd);
	}
	printf("done %lld %.3f %lld\n", total, (now_ns() - start) / 1e9, failures);
	return 0;
}
