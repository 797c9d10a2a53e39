/* uring — FUSE requests over io_uring (see uring.h). */
#define FUSE_USE_VERSION 312
#include "uring.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"

/* The kernel's interface (include/uapi/linux/fuse.h, 7.42); Debian 12's
 * headers are older. */
#define URING_OFFER (1u << 9) /* FUSE_OVER_IO_URING >> 32, in flags2 */
#define INIT_EXT (1u << 30)
enum { URING_REGISTER = 1, URING_COMMIT_AND_FETCH = 2 };

struct uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct uring_req_header {
	char in_out[128]; /* fuse_in_header, then fuse_out_header */
	char op_in[128];  /* the request's first argument, its fixed part */
	struct uring_ent_in_out ent;
};

struct uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

/* Room in front of the payload for the headers, so that a request can be
 * handed to libfuse as one buffer. */
#define FRONT 256

struct worker;

struct entry {
	struct uring_req_header hdr;
	struct iovec iov[2];
	char *mem; /* FRONT bytes, then the payload */
	struct worker *w;
	_Atomic uint64_t unique; /* of the request it holds, 0 if none */
	unsigned slot;           /* ... and its slot in U.held */
	bool committed;          /* its reply went back from its own thread */
	bool ready;              /* another thread's reply is in it: under w->mu */
	uint64_t commit_id;      /* ... for this request */
};

struct worker {
	pthread_t thread;
	bool started;
	unsigned qid;
	struct io_uring ring;
	bool ring_ok;
	pthread_mutex_t mu; /* submissions to RING (the stop comes from elsewhere) */
	pthread_cond_t replied;
	struct entry ent;
};

static struct {
	struct fuse_session *se;
	int fd;
	unsigned threads;       /* per queue */
	_Atomic uint64_t init_unique;
	bool offered;           /* the kernel's INIT offered the ring */
	size_t payload;         /* the largest request: max_write, max_pages */
	unsigned nworkers;
	struct worker *workers;
	/* Which worker's entry holds a request, by its unique ID: a reply may
	 * come from any thread (a durable WRITE's from the one that led the
	 * log's sync), and there are possible CPUs x THREADS entries.  Open
	 * addressing, four slots per entry; a slot is HELD_FREE, HELD_GONE (a
	 * request replied to), HELD_BUSY (being filled), or a unique ID, with
	 * the worker's index in held_by. */
	_Atomic uint64_t *held;
	unsigned *held_by;
	unsigned held_bits;
	atomic_bool active;      /* a worker registered: WORKERS is set up (read it only after) */
	atomic_bool stopping;
	_Atomic uint64_t served; /* requests that came through the ring */
} U;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;
	if (n >= (ssize_t)(sizeof *in + 20) && in->opcode == FUSE_INIT) {
		const uint32_t *arg = (const uint32_t *)(in + 1); /* major, minor, readahead, flags, flags2 */
		U.offered = (arg[3] & INIT_EXT) && (arg[4] & URING_OFFER);
		atomic_store(&U.init_unique, in->unique);
	}
	return n;
}

static void *serve(void *arg);
static int worker_init(struct worker *w, unsigned qid);

/* The kernel's number of queues: one per possible CPU, numbered by CPU. */
static unsigned possible_cpus(void)
{
	unsigned last = 0;
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	if (f) {
		char line[256];
		if (fgets(line, sizeof line, f)) {
			/* "0-1" or "0-3,6-7": the highest number is the last one */
			char *p = line + strcspn(line, "\n");
			*p = 0;
			while (p > line && p[-1] >= '0' && p[-1] <= '9')
				p--;
			last = (unsigned)strtoul(p, NULL, 10);
		}
		fclose(f);
	} else {
		long n = sysconf(_SC_NPROCESSORS_CONF);
		last = n > 1 ? (unsigned)n - 1 : 0;
	}
	return last + 1;
}

/* INIT's reply: accept the ring if offered, and start its threads once
 * the kernel has the reply (registering needs an initialised connection). */
static ssize_t init_reply(int fd, struct iovec *iov, int count)
{
	bool want = U.offered && count >= 2 && iov[1].iov_len >= 64 &&
		    ((struct fuse_out_header *)iov[0].iov_base)->error == 0;
	if (want) {
		char *o = iov[1].iov_base; /* fuse_init_out */
		uint32_t flags, flags2, max_write;
		uint16_t max_pages;
		memcpy(&flags, o + 12, 4);
		memcpy(&max_write, o + 20, 4);
		memcpy(&max_pages, o + 28, 2);
		memcpy(&flags2, o + 32, 4);
		flags |= INIT_EXT;
		flags2 |= URING_OFFER;
		memcpy(o + 12, &flags, 4);
		memcpy(o + 32, &flags2, 4);
		size_t pages = (size_t)max_pages * (size_t)sysconf(_SC_PAGESIZE);
		U.payload = max_write > pages ? max_write : pages;
		if (U.payload < 8192)
			U.payload = 8192;
	}
	ssize_t n = writev(fd, iov, count);
	if (n < 0)
		return n;
	if (!want) {
		cow_info("FUSE over io_uring: %s; requests go through /dev/fuse",
			 U.offered ? "INIT failed" : "not offered by the kernel (the fuse module's enable_uring is off, or "
						     "the kernel is older than 6.14)");
		return n;
	}
	unsigned queues = possible_cpus(), nw = queues * U.threads;
	U.workers = calloc(nw, sizeof *U.workers);
	for (U.held_bits = 2; (1u << U.held_bits) < 4 * nw; U.held_bits++)
		;
	U.held = calloc(1u << U.held_bits, sizeof *U.held);
	U.held_by = calloc(1u << U.held_bits, sizeof *U.held_by);
	if (!U.workers || !U.held || !U.held_by) {
		free(U.workers);
		free(U.held);
		free(U.held_by);
		U.workers = NULL;
		U.held = NULL;
		U.held_by = NULL;
		cow_warn("FUSE over io_uring: out of memory; requests go through /dev/fuse");
		return n;
	}
	U.nworkers = nw;
	for (unsigned i = 0; i < nw; i++) {
		struct worker *w = &U.workers[i];
		int e = worker_init(w, i / U.threads);
		if (e == 0 && (e = pthread_create(&w->thread, NULL, serve, w)) > 0)
			e = -e;
		if (e < 0) {
			/* the kernel uses the ring once every queue has an entry */
			cow_warn("FUSE over io_uring: cannot start a thread of queue %u: %s; the ring runs with "
				 "fewer threads, or not at all if a queue has none", w->qid, strerror(-e));
			return n;
		}
		w->started = true;
	}
	cow_info("FUSE over io_uring: %u queues (one per possible CPU), %u threads each", queues, U.threads);
	return n;
}

static __thread struct worker *self; /* the ring worker this thread is, if any */

#define HELD_FREE 0
#define HELD_GONE UINT64_MAX
#define HELD_BUSY (UINT64_MAX - 1)

static unsigned held_home(uint64_t unique)
{
	return (unsigned)((unique * 0x9E3779B97F4A7C15ull) >> (64 - U.held_bits));
}

/* E now holds the request UNIQUE (from E's own thread).  The table has four
 * slots per entry and an entry holds one request at a time, so a slot is
 * always found; it is the first free or gone one from UNIQUE's home, so
 * that entry_of() finds it after the entries held between the two. */
static void held_add(struct entry *e, uint64_t unique)
{
	unsigned mask = (1u << U.held_bits) - 1;
	for (unsigned i = held_home(unique);; i = (i + 1) & mask) {
		uint64_t k = atomic_load_explicit(&U.held[i], memory_order_relaxed);
		if ((k == HELD_FREE || k == HELD_GONE) &&
		    atomic_compare_exchange_strong_explicit(&U.held[i], &k, HELD_BUSY, memory_order_acquire,
							    memory_order_relaxed)) {
			U.held_by[i] = (unsigned)(e->w - U.workers);
			e->slot = i;
			atomic_store_explicit(&U.held[i], unique, memory_order_release);
			return;
		}
	}
}

/* The entry holding request UNIQUE, or NULL (a request that did not come
 * through the ring).  Slots are never made free again, only gone, so a
 * search for a request that is not there may cross the whole table. */
static struct entry *entry_of(uint64_t unique)
{
	unsigned mask = (1u << U.held_bits) - 1, i = held_home(unique);
	for (unsigned n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint64_t k = atomic_load_explicit(&U.held[i], memory_order_acquire);
		if (k == unique)
			return &U.workers[U.held_by[i]].ent;
		if (k == HELD_FREE)
			break;
	}
	return NULL;
}

/* Queue CMD for E on its worker's ring, from E's own thread (io_writev
 * says why); the lock keeps out cow_uring_stop()'s NOP. */
static int submit_cmd(struct entry *e, unsigned op, uint64_t commit_id)
{
	struct worker *w = e->w;
	pthread_mutex_lock(&w->mu);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	int r = -EBUSY;
	if (sqe) {
		memset(sqe, 0, 128);
		sqe->opcode = IORING_OP_URING_CMD;
		sqe->fd = U.fd;
		sqe->cmd_op = op;
		sqe->addr = (uintptr_t)e->iov;
		sqe->len = 2;
		sqe->user_data = (uintptr_t)e;
		struct uring_cmd_req *cr = (struct uring_cmd_req *)sqe->cmd;
		cr->qid = (uint16_t)w->qid;
		cr->commit_id = commit_id;
		r = io_uring_submit(&w->ring);
		r = r == 1 ? 0 : r < 0 ? r : -EIO;
	}
	pthread_mutex_unlock(&w->mu);
	return r;
}

/* E's reply to request UNIQUE becomes EIO, with no payload. */
static void reply_eio(struct entry *e, uint64_t unique)
{
	struct fuse_out_header eh = { sizeof eh, -EIO, unique };
	memcpy(e->hdr.in_out, &eh, sizeof eh);
	e->hdr.ent.payload_sz = 0;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *oh = iov[0].iov_base;
	uint64_t unique = oh->unique;
	if (unique && unique == atomic_load(&U.init_unique))
		return init_reply(fd, iov, count);
	struct entry *e = unique && atomic_load(&U.active) ? entry_of(unique) : NULL;
	if (!e)
		return writev(fd, iov, count);
	size_t len = iov[0].iov_len, at = 0;
	char *payload = e->mem + FRONT;
	for (int i = 1; i < count && at <= U.payload; i++) {
		if (at + iov[i].iov_len <= U.payload)
			memmove(payload + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	int err = 0;
	memcpy(e->hdr.in_out, oh, sizeof *oh);
	e->hdr.ent.payload_sz = (uint32_t)at;
	if (at > U.payload) { /* cannot happen: replies fit what the kernel asked for */
		reply_eio(e, unique);
		at = 0;
		err = EINVAL;
	}
	len += at;
	atomic_store_explicit(&U.held[e->slot], HELD_GONE, memory_order_release);
	atomic_store_explicit(&e->unique, 0, memory_order_release);
	if (self == e->w) {
		int r = submit_cmd(e, URING_COMMIT_AND_FETCH, unique);
		e->committed = true;
		if (r < 0)
			err = -r;
	} else {
		/* The commit must come from the entry's own thread: io_uring
		 * cancels what a thread submitted when it exits, and then the
		 * kernel would lose the entry. */
		pthread_mutex_lock(&e->w->mu);
		e->commit_id = unique;
		e->ready = true;
		pthread_cond_signal(&e->w->replied);
		pthread_mutex_unlock(&e->w->mu);
	}
	if (err) {
		errno = err;
		return -1;
	}
	return (ssize_t)len;
}

/* A request in E, as /dev/fuse would have delivered it, to libfuse;
 * false if E holds no well-formed request. */
static bool process(struct entry *e)
{
	struct fuse_in_header in;
	memcpy(&in, e->hdr.in_out, sizeof in);
	size_t payload = e->hdr.ent.payload_sz;
	size_t op = in.len - sizeof in - payload;
	if (in.len < sizeof in + payload || op > sizeof e->hdr.op_in || payload > U.payload) {
		cow_warn("FUSE over io_uring: a malformed request (opcode %u, %u bytes)", in.opcode, in.len);
		return false;
	}
	char *start = e->mem + FRONT - op - sizeof in;
	memcpy(start, &in, sizeof in);
	memcpy(start + sizeof in, e->hdr.op_in, op);
	atomic_store_explicit(&e->unique, in.unique, memory_order_release);
	held_add(e, in.unique);
	struct fuse_buf buf = { .mem = start, .size = in.len };
	atomic_fetch_add_explicit(&U.served, 1, memory_order_relaxed);
	fuse_session_process_buf(U.se, &buf);
	return true;
}

/* W's ring and entry, before its thread starts (so that a stop finds the
 * ring whatever the thread has got to). */
static int worker_init(struct worker *w, unsigned qid)
{
	w->qid = qid;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->replied, NULL);
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
	int r = io_uring_queue_init_params(4, &w->ring, &p);
	if (r < 0)
		return r;
	w->ring_ok = true;
	struct entry *e = &w->ent;
	e->w = w;
	e->mem = malloc(FRONT + U.payload);
	if (!e->mem)
		return -ENOMEM;
	e->iov[0] = (struct iovec){ &e->hdr, sizeof e->hdr };
	e->iov[1] = (struct iovec){ e->mem + FRONT, U.payload };
	return 0;
}

/* A worker registers its entry (from its own thread: the kernel hands an
 * entry's next request to the thread that armed it) and serves it. */
static void *serve(void *arg)
{
	struct worker *w = arg;
	struct entry *e = &w->ent;
	self = w;
	int r = submit_cmd(e, URING_REGISTER, 0);
	if (r < 0) {
		cow_warn("FUSE over io_uring: queue %u: register: %s", w->qid, strerror(-r));
		return NULL;
	}
	atomic_store(&U.active, true);
	for (;;) {
		struct io_uring_cqe *cqe;
		r = io_uring_wait_cqe(&w->ring, &cqe);
		if (r == -EINTR)
			continue;
		if (r < 0)
			break;
		int res = cqe->res;
		void *who = io_uring_cqe_get_data(cqe);
		io_uring_cqe_seen(&w->ring, cqe);
		if (!who || atomic_load(&U.stopping))
			break;
		if (res < 0) {
			if (res != -ENOTCONN && res != -ECANCELED)
				cow_warn("FUSE over io_uring: queue %u: %s", w->qid, strerror(-res));
			break;
		}
		uint64_t id = e->hdr.ent.commit_id;
		if (!process(e)) {
			reply_eio(e, id);
		} else if (e->committed) {
			e->committed = false;
			continue;
		} else {
			/* the reply comes from another thread (a durable WRITE's, from
			 * the thread whose log sync covered it): wait for it */
			pthread_mutex_lock(&w->mu);
			while (!e->ready && !atomic_load(&U.stopping))
				pthread_cond_wait(&w->replied, &w->mu);
			bool ready = e->ready;
			e->ready = false;
			id = e->commit_id;
			pthread_mutex_unlock(&w->mu);
			if (!ready)
				break;
		}
		if ((r = submit_cmd(e, URING_COMMIT_AND_FETCH, id)) < 0) {
			cow_warn("FUSE over io_uring: queue %u: commit: %s", w->qid, strerror(-r));
			break;
		}
	}
	return NULL;
}

int cow_uring_attach(struct fuse_session *se, unsigned threads)
{
	static const struct fuse_custom_io io = { .read = io_read, .writev = io_writev };
	U.se = se;
	U.fd = fuse_session_fd(se);
	U.threads = threads ? threads : 1;
	int r = fuse_session_custom_io(se, &io, U.fd);
	return r < 0 ? r : 0;
}

void cow_uring_stop(void)
{
	atomic_store(&U.stopping, true);
	for (unsigned i = 0; i < U.nworkers; i++) {
		struct worker *w = &U.workers[i];
		if (w->started) {
			/* a NOP without data: the thread's signal to stop */
			pthread_mutex_lock(&w->mu);
			pthread_cond_signal(&w->replied);
			struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
			if (sqe) {
				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data(sqe, NULL);
				io_uring_submit(&w->ring);
			}
			pthread_mutex_unlock(&w->mu);
			pthread_join(w->thread, NULL);
		}
		if (w->ring_ok)
			io_uring_queue_exit(&w->ring);
		free(w->ent.mem);
	}
	if (U.workers)
		cow_info("FUSE over io_uring: %llu requests came through the ring",
			 (unsigned long long)atomic_load(&U.served));
	free(U.workers);
	free(U.held);
	free(U.held_by);
	U.workers = NULL;
	U.held = NULL;
	U.held_by = NULL;
	U.nworkers = 0;
}
