#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Written once by cow_notify_init() before any thread exists; read-only after. */
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen; /* 0: nobody to tell */

int cow_notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	notify_addrlen = 0;
	memset(&notify_addr, 0, sizeof notify_addr);
	if (!e || !*e) {
		unsetenv("NOTIFY_SOCKET");
		return 0;
	}
	size_t n = strlen(e);
	int r = 1;
	if (e[0] != '/' && e[0] != '@') {
		r = strchr(e, ':') ? -EAFNOSUPPORT : -EINVAL;
	} else if (n >= sizeof notify_addr.sun_path) {
		r = -EINVAL;
	} else {
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, e, n);
		if (e[0] == '@') {
			/* abstract: a leading NUL, and the length says where the name ends */
			notify_addr.sun_path[0] = 0;
			notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		} else {
			notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		}
	}
	unsetenv("NOTIFY_SOCKET");
	return r;
}

int cow_notify(const char *state)
{
	if (!notify_addrlen)
		return 0;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = 1;
	ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
			   notify_addrlen);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != strlen(state))
		r = -EMSGSIZE;
	close(fd);
	return r;
}

int cow_notifyf(const char *fmt, ...)
{
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return cow_notify(msg);
}
