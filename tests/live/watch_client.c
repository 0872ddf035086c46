/* The article's client (shared/article.txt), its lost #include lines restored.
 * Changed only so a test is quick and can pick its port: the pause before the
 * first write (5 s in the article), the pause between the writes (1 s) and the
 * port (9999) may be given as arguments, and stdout is flushed at each step:
 *     ./watch_client [PAUSE_S [GAP_S [PORT]]]
 * Compiled by tests/live/test_vm_watch.py and test_native_watch.py with gcc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <assert.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>

static int port = 9999;

int tcp_connect() {
    int sockfd, err;
    struct sockaddr_in addr;
    sockfd = socket(AF_INET, SOCK_STREAM, 0);
    assert(sockfd != -1);
    bzero(&addr, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = inet_addr("127.0.0.1");
    addr.sin_port = htons(port);
    err = connect(sockfd, (struct sockaddr *)&addr, sizeof(addr));
    assert(err == 0);
    return sockfd;
}

int main(int argc, char **argv) {
    int n;
    double pause = argc > 1 ? atof(argv[1]) : 5, gap = argc > 2 ? atof(argv[2]) : 1;
    if (argc > 3)
        port = atoi(argv[3]);
    int sockfd = tcp_connect();
    signal(SIGPIPE, SIG_IGN); // ignore SIGPIPE for testing
    printf("Please close the server within %g seconds...\n", pause);
    fflush(stdout);
    usleep(pause * 1e6);
    // write 1
    n = write(sockfd, "hello\n", 6);
    if (n == -1) { perror("first write failed"); return -1; }
    assert(n == 6);
    printf("first write succeeded!\n");
    fflush(stdout);
    usleep(gap * 1e6);
    // write 2
    n = write(sockfd, "world\n", 6);
    if (n == -1) { perror("second write failed"); return -1; }
    assert(n == 6);
    printf("second write succeeded!\n");
    return 0;
}
