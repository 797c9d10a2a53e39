/* Unit tests of notify: a datagram socket stands in for systemd, bound at a
 * path or in the abstract namespace, with SO_PASSCRED on as systemd has it,
 * so that each test sees the message and the pid the kernel says sent it. */
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "notify.h"
#include "testutil.h"
#include "util.h"

struct listener {
	int fd;
	char *tmp;        /* temp dir of a path socket, or NULL */
	char addr[108];   /* what goes into $NOTIFY_SOCKET */
};

static void listener_open(struct listener *l, bool abstract)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l->fd, 0);
	if (abstract) {
		l->tmp = NULL;
		snprintf(l->addr, sizeof l->addr, "@cowfs-unit-notify-%d-%ld", (int)getpid(), random());
		memcpy(sa.sun_path + 1, l->addr + 1, strlen(l->addr) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->addr));
	} else {
		l->tmp = tu_tmpdir();
		snprintf(l->addr, sizeof l->addr, "%s/notify", l->tmp);
		strcpy(sa.sun_path, l->addr);
		len = sizeof sa;
	}
	ck_assert_int_eq(bind(l->fd, (struct sockaddr *)&sa, len), 0);
	int one = 1;
	ck_assert_int_eq(setsockopt(l->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
	struct timeval tv = { .tv_sec = 5 };
	ck_assert_int_eq(setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
}

static void listener_close(struct listener *l)
{
	close(l->fd);
	if (l->tmp) {
		tu_rmrf(l->tmp);
		free(l->tmp);
	}
}

/* Receive one datagram into BUF (NUL-terminated); return the sender's pid. */
static pid_t listener_recv(struct listener *l, char *buf, size_t size)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
			     .msg_controllen = sizeof control };
	ssize_t n = recvmsg(l->fd, &mh, 0);
	ck_assert_msg(n >= 0, "no datagram arrived: %s", strerror(errno));
	ck_assert_msg(!(mh.msg_flags & MSG_TRUNC), "datagram truncated");
	buf[n] = 0;
	pid_t pid = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred cred;
			memcpy(&cred, CMSG_DATA(c), sizeof cred);
			pid = cred.pid;
		}
	return pid;
}

/* Nothing is waiting in the listener's queue. */
static void listener_assert_empty(struct listener *l)
{
	char b[16];
	ck_assert_int_eq(recv(l->fd, b, sizeof b, MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
}

static void check_round_trip(bool abstract)
{
	struct listener l;
	listener_open(&l, abstract);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", l.addr, 1), 0);
	ck_assert_int_eq(cow_notify_init(), 1);
	ck_assert_ptr_null(getenv("NOTIFY_SOCKET")); /* children must not inherit it */

	char buf[8192];
	ck_assert_int_eq(cow_notify("READY=1"), 1);
	ck_assert_int_eq(listener_recv(&l, buf, sizeof buf), getpid());
	ck_assert_str_eq(buf, "READY=1");

	ck_assert_int_eq(cow_notifyf("STATUS=serving %s at %s", "/var/lib/cowfs", "/branches"), 1);
	ck_assert_int_eq(listener_recv(&l, buf, sizeof buf), getpid());
	ck_assert_str_eq(buf, "STATUS=serving /var/lib/cowfs at /branches");

	ck_assert_int_eq(cow_notify("STOPPING=1\nSTATUS=final checkpoint"), 1);
	listener_recv(&l, buf, sizeof buf);
	ck_assert_str_eq(buf, "STOPPING=1\nSTATUS=final checkpoint");

	/* cow_notifyf cuts at 4 KiB rather than overflowing */
	char big[6000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	ck_assert_int_eq(cow_notifyf("STATUS=%s", big), 1);
	listener_recv(&l, buf, sizeof buf);
	ck_assert_uint_eq(strlen(buf), 4095);
	listener_assert_empty(&l);
	listener_close(&l);
}

START_TEST(test_path_socket) { check_round_trip(false); }
END_TEST

START_TEST(test_abstract_socket) { check_round_trip(true); }
END_TEST

START_TEST(test_no_manager)
{
	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(cow_notify_init(), 0);
	ck_assert_int_eq(cow_notify("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	ck_assert_int_eq(cow_notify_init(), 0);
	ck_assert_int_eq(cow_notify("READY=1"), 0);
	ck_assert_ptr_null(getenv("NOTIFY_SOCKET"));
}
END_TEST

START_TEST(test_bad_addresses)
{
	char longpath[200];
	memset(longpath, 'a', sizeof longpath - 1);
	longpath[0] = '/';
	longpath[sizeof longpath - 1] = 0;
	const struct { const char *addr; int want; } cases[] = {
		{ "relative/socket", -EINVAL },
		{ "notify", -EINVAL },
		{ longpath, -EINVAL },
		{ "vsock:2:1234", -EAFNOSUPPORT },
	};
	for (size_t i = 0; i < COW_ARRAY_SIZE(cases); i++) {
		setenv("NOTIFY_SOCKET", cases[i].addr, 1);
		ck_assert_int_eq(cow_notify_init(), cases[i].want);
		ck_assert_ptr_null(getenv("NOTIFY_SOCKET"));
		/* after a bad address, sends are quiet no-ops */
		ck_assert_int_eq(cow_notify("READY=1"), 0);
	}
}
END_TEST

START_TEST(test_listener_gone)
{
	struct listener l;
	listener_open(&l, false);
	setenv("NOTIFY_SOCKET", l.addr, 1);
	ck_assert_int_eq(cow_notify_init(), 1);
	ck_assert_int_eq(unlink(l.addr), 0);
	ck_assert_int_eq(cow_notify("READY=1"), -ENOENT);
	listener_close(&l);

	listener_open(&l, true);
	setenv("NOTIFY_SOCKET", l.addr, 1);
	ck_assert_int_eq(cow_notify_init(), 1);
	close(l.fd);
	ck_assert_int_eq(cow_notify("READY=1"), -ECONNREFUSED);
}
END_TEST

/* A message from another thread carries the same pid: systemd's
 * NotifyAccess=main accepts it. */
static void *send_ready(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)cow_notify("READY=1");
}

START_TEST(test_from_a_thread)
{
	struct listener l;
	listener_open(&l, true);
	setenv("NOTIFY_SOCKET", l.addr, 1);
	ck_assert_int_eq(cow_notify_init(), 1);
	pthread_t t;
	void *r;
	ck_assert_int_eq(pthread_create(&t, NULL, send_ready, NULL), 0);
	ck_assert_int_eq(pthread_join(t, &r), 0);
	ck_assert_int_eq((int)(intptr_t)r, 1);
	char buf[64];
	ck_assert_int_eq(listener_recv(&l, buf, sizeof buf), getpid());
	ck_assert_str_eq(buf, "READY=1");
	listener_close(&l);
}
END_TEST

int main(void)
{
	srandom((unsigned)getpid());
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_path_socket);
	tcase_add_test(tc, test_abstract_socket);
	tcase_add_test(tc, test_no_manager);
	tcase_add_test(tc, test_bad_addresses);
	tcase_add_test(tc, test_listener_gone);
	tcase_add_test(tc, test_from_a_thread);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
