/*
 * nfq_accept: the baseline of `make bench-live`. A minimal NFQUEUE consumer
 * against libnetfilter_queue: it binds one queue, copies each packet in
 * full (as qtables does), and gives every packet its own NF_ACCEPT verdict.
 * It prints the number of packets it saw when stopped (SIGTERM, SIGINT).
 *
 * usage: nfq_accept QUEUE [QUEUE_LEN [RCVBUF_BYTES]]
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stop;
static unsigned long long packets, enobufs;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	packets++;
	return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s QUEUE [QUEUE_LEN [RCVBUF_BYTES]]\n", argv[0]);
		return 2;
	}
	uint16_t num = (uint16_t)atoi(argv[1]);
	uint32_t qlen = argc > 2 ? (uint32_t)atoi(argv[2]) : 1024;
	unsigned int rcvbuf = argc > 3 ? (unsigned int)atoi(argv[3]) : 4u << 20;

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: recv returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	struct nfq_handle *h = nfq_open();
	if (!h) {
		perror("nfq_open");
		return 1;
	}
	struct nfq_q_handle *qh = nfq_create_queue(h, num, &cb, NULL);
	if (!qh) {
		perror("nfq_create_queue");
		return 1;
	}
	if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0 || nfq_set_queue_maxlen(qh, qlen) < 0) {
		perror("nfq_set_mode");
		return 1;
	}
	nfnl_rcvbufsiz(nfq_nfnlh(h), rcvbuf);
	int fd = nfq_fd(h);
	fprintf(stderr, "nfq_accept: queue %u bound\n", num);

	static char buf[0x10000 + 4096] __attribute__((aligned));
	while (!stop) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n >= 0) {
			nfq_handle_packet(h, buf, (int)n);
			continue;
		}
		if (errno == ENOBUFS) {
			enobufs++;
			continue;
		}
		if (errno == EINTR)
			continue;
		perror("recv");
		break;
	}
	printf("packets %llu enobufs %llu\n", packets, enobufs);
	fflush(stdout);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}
