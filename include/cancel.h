/*
 * cancel.h - structured, cooperative cancellation for POSIX threads.
 *
 * The whole public API of libcancel.  Three ideas (see cancel(7)):
 *
 *  - Tokens form a tree.  Cancelling a token flags it and every descendant
 *    with a reason (a positive errno-style int) and runs the callbacks
 *    registered on them.  Nothing is unwound.
 *  - Wrapped blocking calls (cancel_read, cancel_accept, cancel_sleep, ...)
 *    behave like the call they wrap until the calling thread's current
 *    token is cancelled; then they fail with ECANCELED (ETIMEDOUT when a
 *    deadline fired), and a thread already blocked in one wakes promptly.
 *  - Scopes spawn tasks on threads and always join them all.
 *
 * Conventions.  Functions that wrap a POSIX call keep its error convention
 * (read style: -1 and errno; pthread style: the error number returned).
 * Other functions return 0 or a positive errno value, or a pointer / NULL
 * with errno set.  Bad input never aborts.  Every function may be called
 * from any thread on any live object.  Times are CLOCK_MONOTONIC: absolute
 * deadlines are struct timespec, relative durations int64_t nanoseconds.
 */
#ifndef CANCEL_H
#define CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/epoll.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CANCEL_API __attribute__((visibility("default")))
#else
#define CANCEL_API
#endif

/* ---------------------------------------------------------------------- */
/* Tokens                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * An opaque, reference-counted cancellation token.  A NULL token means
 * "never cancelled" wherever a token is read.  The first member of the
 * object is its reason word (an int: the reason in its low 31 bits, 0 while
 * live; bit 31 is the library's); the inline fast path of
 * cancel_token_is_cancelled below reads it, and that layout is part of the
 * ABI.
 */
typedef struct cancel_token cancel_token_t;

/*
 * cancel_token_new - a new root token, reference count 1.
 * Returns NULL with errno ENOMEM when memory runs out.
 */
CANCEL_API cancel_token_t *cancel_token_new(void);

/*
 * cancel_token_child - a new token cancelled when PARENT is (with PARENT's
 * reason) or on its own.  It holds a reference on PARENT; PARENT does not
 * keep it alive, and releasing it unlinks it from PARENT at once.  A child
 * of a cancelled parent is born cancelled; a child of NULL is a root.
 * Returns NULL with errno ENOMEM when memory runs out.
 */
CANCEL_API cancel_token_t *cancel_token_child(cancel_token_t *parent);

/*
 * cancel_token_with_deadline - a child of PARENT that cancels itself with
 * ETIMEDOUT at the absolute CLOCK_MONOTONIC time *AT (never earlier).  A
 * deadline already past gives a token born cancelled.  Returns NULL with
 * errno EINVAL (AT NULL or tv_nsec out of range) or ENOMEM.
 */
CANCEL_API cancel_token_t *cancel_token_with_deadline(cancel_token_t *parent,
                                                      const struct timespec *at);

/*
 * cancel_token_with_timeout - cancel_token_with_deadline at now + NS
 * nanoseconds; NS <= 0 gives a token born cancelled with ETIMEDOUT.
 */
CANCEL_API cancel_token_t *cancel_token_with_timeout(cancel_token_t *parent, int64_t ns);

/*
 * cancel_token_set_deadline - arm, move (earlier or later) or, with AT
 * NULL, remove T's own deadline, the absolute CLOCK_MONOTONIC time at
 * which T cancels itself with ETIMEDOUT.  Works on any token, not only
 * deadline tokens; the effective deadline (cancel_token_deadline) stays
 * the earliest of T's own and its ancestors'.  A past AT cancels T with
 * ETIMEDOUT before returning.  O(log n) in the pending deadlines; takes
 * no lock that token and callback operations take (one idle timeout per
 * request costs one call, not a new token).  Returns 0; EALREADY when T
 * is already cancelled or its current deadline has already passed
 * (nothing changes); EINVAL for T NULL or tv_nsec outside [0, 1e9);
 * ENOMEM.  Thread-safe.  See cancel_token_set_deadline(3).
 */
CANCEL_API int cancel_token_set_deadline(cancel_token_t *t, const struct timespec *at);

/*
 * cancel_token_any - a linked token, cancelled as soon as any of the N
 * TOKENS is, with that token's reason.  It holds references on them while
 * it lives and unregisters from all of them when released.  NULL entries
 * never fire; N == 0 gives a token only cancel_token_cancel can cancel.
 * Returns NULL with errno EINVAL (TOKENS NULL while N > 0) or ENOMEM.
 */
CANCEL_API cancel_token_t *cancel_token_any(cancel_token_t *const *tokens, size_t n);

/* cancel_token_ref - take one more reference; returns T (NULL stays NULL). */
CANCEL_API cancel_token_t *cancel_token_ref(cancel_token_t *t);

/*
 * cancel_token_unref - release one reference; the last one frees the token
 * (its deadline, fd, signal and link registrations with it) and releases
 * its parent.  NULL is fine.  Never recurses, whatever the depth.
 */
CANCEL_API void cancel_token_unref(cancel_token_t *t);

/*
 * cancel_token_cancel - cancel T and all its descendants with REASON
 * (REASON <= 0 means ECANCELED).  Returns true for the one call that made
 * the transition; before it returns, T and every descendant report
 * cancelled and every callback registered on them has run to completion
 * (except one running on this very thread).  A later call returns false
 * at once and changes nothing (the first reason wins).  NULL: false.
 */
CANCEL_API bool cancel_token_cancel(cancel_token_t *t, int reason);

/*
 * cancel_token_cancel_at - cancel_token_cancel that also records the
 * caller's source location; see CANCEL_TOKEN_CANCEL and
 * cancel_token_cancelled_from.
 */
CANCEL_API bool cancel_token_cancel_at(cancel_token_t *t, int reason,
                                       const char *file, int line);

/* Cancels T recording this source line as where it was cancelled from. */
#define CANCEL_TOKEN_CANCEL(t, reason) \
    cancel_token_cancel_at((t), (reason), __FILE__, __LINE__)

/*
 * cancel_token_cancelled_from - where T's cancellation came from: the
 * thread (as pthread_self() there) and, when cancelled through
 * CANCEL_TOKEN_CANCEL, the source file and line (else FILE NULL, LINE 0).
 * For a token cancelled through an ancestor or a linked source, the answer
 * is that token's.  Returns 0, or ESRCH when T is not cancelled or the
 * origin was not recorded (memory ran out at cancel time), EINVAL for NULL.
 */
CANCEL_API int cancel_token_cancelled_from(const cancel_token_t *t, pthread_t *thread,
                                           const char **file, int *line);

/* cancel_token_is_cancelled - true once T is cancelled.  One atomic load. */
CANCEL_API bool cancel_token_is_cancelled(const cancel_token_t *t);

/* cancel_token_reason - T's reason, or 0 while it is not cancelled. */
CANCEL_API int cancel_token_reason(const cancel_token_t *t);

/*
 * cancel_token_wait - block until T is cancelled (returns 0), the absolute
 * DEADLINE passes (ETIMEDOUT; NULL: none), or the calling thread's current
 * token is cancelled (ECANCELED or ETIMEDOUT).  Errors are returned, not
 * put in errno.  T NULL with no deadline and no current token is EINVAL
 * (it would never return).
 */
CANCEL_API int cancel_token_wait(cancel_token_t *t, const struct timespec *deadline);

/*
 * cancel_token_fd - a file descriptor owned by T that polls readable once T
 * is cancelled; created on first use, closed when T is freed.  Do not read
 * or close it.  Returns -1 with errno EINVAL (NULL), EMFILE/ENFILE or
 * ENOMEM.
 */
CANCEL_API int cancel_token_fd(cancel_token_t *t);

/*
 * cancel_token_deadline - T's effective deadline: the earliest over T's own,
 * its ancestors' and (for linked tokens) its sources'.  Returns false when
 * there is none (or T is NULL).
 */
CANCEL_API bool cancel_token_deadline(const cancel_token_t *t, struct timespec *at);

/*
 * cancel_token_cancel_on_signal - the first delivery of SIGNO cancels T
 * with ECANCELED (on a library thread: the handler only hands off).  A
 * second delivery restores the previous disposition and raises the signal
 * again.  The registration ends when T is freed.  Returns 0, EINVAL (NULL
 * token, SIGKILL, SIGSTOP, invalid number) or ENOMEM.
 */
CANCEL_API int cancel_token_cancel_on_signal(cancel_token_t *t, int signo);

/* Inline fast path: one acquire load of the reason word, no call; (R3)
 * pairs with (R1) in token.c, the cancel's store of the reason.  The
 * cancel__ prefix marks it internal: call cancel_token_is_cancelled. */
#if defined(__GNUC__) && !defined(CANCEL_NO_INLINE)
static inline bool cancel__token_is_cancelled_inline(const cancel_token_t *t)
{
    return t != NULL &&
           (__atomic_load_n((const int *)(const void *)t, __ATOMIC_ACQUIRE) & 0x7fffffff) != 0;
}
#define cancel_token_is_cancelled(t) cancel__token_is_cancelled_inline(t)
#endif

/* ---------------------------------------------------------------------- */
/* Callbacks                                                               */
/* ---------------------------------------------------------------------- */

/*
 * Caller-allocated callback storage.  Its contents are private; it needs no
 * initialisation before cancel_callback_add.
 */
typedef struct cancel_callback {
    void *private_[8];
} cancel_callback_t;

typedef void (*cancel_fn)(void *arg, int reason);

/*
 * cancel_callback_add - run FN(ARG, reason) once when T is cancelled, in the
 * cancelling thread.  Returns 0 when armed; 1 when T was already cancelled
 * and FN has run inline; 0 for a NULL T (nothing is armed, FN never runs);
 * -1 with errno EINVAL for a NULL CB or FN.  Never allocates.  An armed
 * callback keeps T alive (as std::stop_callback keeps its stop state),
 * without taking a reference of its own: T is freed when its last
 * reference is released and no callback is armed on it.  CB must stay
 * valid until remove returns, or until FN runs (FN itself may free CB: the
 * library never touches CB after FN returns).
 */
CANCEL_API int cancel_callback_add(cancel_callback_t *cb, cancel_token_t *t,
                                   cancel_fn fn, void *arg);

/*
 * cancel_callback_remove - disarm CB.  Returns true when it was removed
 * before running.  Otherwise returns false after FN has finished, or at
 * once when called from inside FN itself.  Never allocates.  Removing from
 * another thread a callback whose FN waits for that thread deadlocks.
 */
CANCEL_API bool cancel_callback_remove(cancel_callback_t *cb);

/* ---------------------------------------------------------------------- */
/* The current token, checks and shields                                   */
/* ---------------------------------------------------------------------- */

/* cancel_current - the calling thread's current token (borrowed), or NULL. */
CANCEL_API cancel_token_t *cancel_current(void);

/*
 * cancel_enter - make T the calling thread's current token and return the
 * previous one, to be given to cancel_leave.  No reference is taken: keep T
 * alive while it is current.  T may be NULL.
 */
CANCEL_API cancel_token_t *cancel_enter(cancel_token_t *t);

/* cancel_leave - restore PREV, the value cancel_enter returned. */
CANCEL_API void cancel_leave(cancel_token_t *prev);

/* cancel_check - 0, or ECANCELED / ETIMEDOUT when the current token is cancelled. */
CANCEL_API int cancel_check(void);

/*
 * cancel_shield_begin / cancel_shield_end - hide every token entered before
 * the shield: inside, cancel_current() is NULL (or a token entered inside)
 * and wrapped calls are the plain calls.  Shields nest; end restores
 * exactly what begin hid.
 */
CANCEL_API void cancel_shield_begin(void);
CANCEL_API void cancel_shield_end(void);

/* ---------------------------------------------------------------------- */
/* Wrapped blocking calls                                                  */
/* ---------------------------------------------------------------------- */

/*
 * The I/O wrappers.  See cancel_read(3); its NOTES say how they work.
 *
 * Semantics.  Each takes the arguments of the POSIX call it is named after
 * (accept takes accept4's FLAGS) and returns what that call returns.  It
 * reads the calling thread's current token (cancel_current): with none,
 * or in a shield, it is the plain call with EINTR retried.  Under a
 * cancelled token it fails at once, before any I/O, every time; a thread
 * blocked in it when the token (or an ancestor) is cancelled returns
 * within microseconds, having consumed and produced nothing.  Progress
 * wins: a call that moved bytes, accepted a connection or completed a
 * connect returns that, and the next call fails; a blocking write of more
 * than fits keeps writing and returns the count written when cancelled
 * part way.
 *
 * Flags.  Descriptor flags are never changed (connect sets O_NONBLOCK on
 * a blocking socket around the call and restores it).  On an O_NONBLOCK
 * descriptor, or with MSG_DONTWAIT, they never wait (EAGAIN, as the plain
 * call); SO_RCVTIMEO / SO_SNDTIMEO bound a wait on a socket (EAGAIN).
 *
 * Errors.  Those of the wrapped call, plus ECANCELED (the token was
 * cancelled), ETIMEDOUT (its deadline fired) and ENOMEM (a poll of more
 * than 7 descriptors, or an I/O vector of more than 8 entries, whose
 * working copy could not be allocated).  Never EINTR.
 *
 * Resources.  No signal is used; each thread waits on an eventfd of its
 * own, created on its first blocking wait and closed at thread exit (when
 * none can be had, waits re-check the token every 10 ms).  Regular files
 * and block devices move at most 1 MiB per system call.  A connect
 * cancelled while in progress leaves the socket to the caller to close.
 * Thread safety: as the wrapped call.
 */
CANCEL_API ssize_t cancel_read(int fd, void *buf, size_t n);
CANCEL_API ssize_t cancel_write(int fd, const void *buf, size_t n);
CANCEL_API ssize_t cancel_readv(int fd, const struct iovec *iov, int iovcnt);
CANCEL_API ssize_t cancel_writev(int fd, const struct iovec *iov, int iovcnt);
CANCEL_API ssize_t cancel_pread(int fd, void *buf, size_t n, off_t offset);
CANCEL_API ssize_t cancel_pwrite(int fd, const void *buf, size_t n, off_t offset);
CANCEL_API ssize_t cancel_recv(int fd, void *buf, size_t n, int flags);
CANCEL_API ssize_t cancel_send(int fd, const void *buf, size_t n, int flags);
CANCEL_API ssize_t cancel_recvfrom(int fd, void *buf, size_t n, int flags,
                                   struct sockaddr *addr, socklen_t *addrlen);
CANCEL_API ssize_t cancel_sendto(int fd, const void *buf, size_t n, int flags,
                                 const struct sockaddr *addr, socklen_t addrlen);
CANCEL_API ssize_t cancel_recvmsg(int fd, struct msghdr *msg, int flags);
CANCEL_API ssize_t cancel_sendmsg(int fd, const struct msghdr *msg, int flags);
CANCEL_API int cancel_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
CANCEL_API int cancel_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
/* poll / epoll_wait: TIMEOUT_MS as the plain calls; events are collected
 * only once ready, so a cancelled epoll_wait consumes no event. */
CANCEL_API int cancel_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);
CANCEL_API int cancel_epoll_wait(int epfd, struct epoll_event *events, int maxevents,
                                 int timeout_ms);
/*
 * cancel_waitpid - waitpid that waits on a pidfd, so a cancel wakes it and
 * no child is reaped by a cancelled call.  PID <= 0 (any child, a process
 * group) and WUNTRACED/WCONTINUED re-check with WNOHANG every 10 ms while
 * a cancel still wakes at once.  -1 with errno as waitpid, or ECANCELED /
 * ETIMEDOUT.  See cancel_waitpid(3).
 */
CANCEL_API pid_t cancel_waitpid(pid_t pid, int *status, int options);
/*
 * cancel_cond_wait - pthread_cond_wait that also returns (ECANCELED or
 * ETIMEDOUT, pthread style: returned, not in errno) when the current token
 * is cancelled.  Always returns with MUTEX held, never loses a wakeup (a
 * waiter returning ECANCELED passes on a signal it took).  The cancelling
 * thread locks MUTEX to wake the waiter: cancelling while holding a normal
 * MUTEX of a waiting cancel_cond_wait deadlocks (error-checking and
 * recursive mutexes are safe).  See cancel_cond_wait(3).
 */
CANCEL_API int cancel_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);
/*
 * cancel_sem_wait - sem_wait (0, or -1 with errno) that fails with
 * ECANCELED/ETIMEDOUT once the current token is cancelled, taking no unit.
 * Prompt on glibc and Linux 5.16+ (it waits on the semaphore's futex word
 * and a wake word at once); elsewhere a cancel is noticed within 5 ms.
 */
CANCEL_API int cancel_sem_wait(sem_t *sem);

/*
 * cancel_wait_fd - the primitive under the wrappers, for making your own
 * calls cancel-aware (a TLS library on a non-blocking socket): waits until
 * FD is ready for EVENTS (POLLIN, POLLOUT; end of file and errors count as
 * ready) whatever its flags.  0, or -1 with errno ECANCELED, ETIMEDOUT,
 * EBADF, EINVAL.
 */
CANCEL_API int cancel_wait_fd(int fd, short events);
/* cancel_sleep - sleep NS nanoseconds (not cut short by signals): 0, or -1
 * with errno ECANCELED/ETIMEDOUT.  NS <= 0 only checks the token. */
CANCEL_API int cancel_sleep(int64_t ns);
/* cancel_sleep_until - sleep until the absolute CLOCK_MONOTONIC time *AT;
 * as cancel_sleep, plus EINVAL for a NULL or malformed AT. */
CANCEL_API int cancel_sleep_until(const struct timespec *at);
/*
 * cancel_read_full / cancel_write_all - loop until all N bytes moved.
 * Return N (read_full: fewer only at end of file), else -1 with errno
 * (including ECANCELED/ETIMEDOUT).  *DONE, when not NULL, always receives
 * the count moved, so nothing read or written is unaccounted for.
 */
CANCEL_API ssize_t cancel_read_full(int fd, void *buf, size_t n, size_t *done);
CANCEL_API ssize_t cancel_write_all(int fd, const void *buf, size_t n, size_t *done);

/*
 * cancel_getaddrinfo - getaddrinfo(3) that a cancel can abandon.  Same
 * arguments, EAI_* return codes, and result (release it with
 * freeaddrinfo).  Once the current token is cancelled (before the lookup
 * or while it waits on a DNS server) it returns EAI_SYSTEM with errno
 * ECANCELED (ETIMEDOUT for a deadline) promptly; the abandoned lookup
 * ends on a library thread, which frees its result.  With no current
 * token (or in a shield) it is the plain call.  Thread safety: MT-Safe.
 * See cancel_getaddrinfo(3) and, for unmodified code, man 7 cancel_interpose.
 */
struct addrinfo;
CANCEL_API int cancel_getaddrinfo(const char *node, const char *service,
                                  const struct addrinfo *hints, struct addrinfo **res);

/* ---------------------------------------------------------------------- */
/* Scopes                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * A scope (nursery) runs tasks on threads and never lets go of them: its
 * join waits for every task.  Each task runs on its own thread (threads
 * are reused from a process-wide cache) with its own task token, a child
 * of the scope's token, as the thread's current token.  See
 * cancel_scope_open(3).
 */
typedef struct cancel_scope cancel_scope_t;
typedef struct cancel_task cancel_task_t;
/* A task: returns 0, or an error code (a positive errno-style int). */
typedef int (*cancel_task_fn)(void *arg);

/* A failing task neither cancels its siblings nor fails the scope. */
#define CANCEL_SCOPE_SUPERVISE 0x1
/* The first task returning 0 terminates the scope with its arg as value. */
#define CANCEL_SCOPE_RACE      0x2

/*
 * cancel_scope_open_in - a new scope whose token is a child of PARENT
 * (NULL: a root).  Under a cancelled PARENT the scope is born cancelled.
 * FLAGS: 0 (fail-fast), CANCEL_SCOPE_SUPERVISE or CANCEL_SCOPE_RACE.
 * Returns NULL with errno EINVAL (both flags, unknown bits) or ENOMEM.
 * cancel_scope_open - the same with the calling thread's current token
 * as PARENT.
 */
CANCEL_API cancel_scope_t *cancel_scope_open(int flags);
CANCEL_API cancel_scope_t *cancel_scope_open_in(cancel_token_t *parent, int flags);

/*
 * cancel_scope_spawn - run FN(ARG) on a thread of its own, as a task of S.
 * Callable from any thread (tasks of S included) until join starts; after
 * that only from S's own tasks.  Returns 0, after which FN runs exactly
 * once even if S is cancelled before it starts; ECANCELED when S is
 * cancelled (nothing starts); EAGAIN when no thread could be created (S
 * stays joinable); ENOMEM; EINVAL (S or FN NULL, join started).  With a
 * limit set, waits for a free slot and gives up with ECANCELED when S's
 * token or the caller's current token is cancelled.  When TASK is not
 * NULL it receives a handle valid until S is joined.
 * cancel_scope_spawn_named - the same, naming the task for
 * cancel_scope_dump (NAME is copied, truncated to 31 bytes; NULL: none).
 */
CANCEL_API int cancel_scope_spawn(cancel_scope_t *s, cancel_task_fn fn, void *arg,
                                  cancel_task_t **task);
CANCEL_API int cancel_scope_spawn_named(cancel_scope_t *s, const char *name,
                                        cancel_task_fn fn, void *arg, cancel_task_t **task);

/*
 * cancel_scope_set_limit - at most MAX_RUNNING tasks of S run at once (0:
 * no limit); applies to later spawns.  Returns 0 or EINVAL (S NULL).
 */
CANCEL_API int cancel_scope_set_limit(cancel_scope_t *s, unsigned max_running);

/*
 * cancel_scope_set_stack_size - stack size of the threads that run S's
 * later tasks (0: the process-wide default).  Returns 0 or EINVAL (S NULL,
 * BYTES below PTHREAD_STACK_MIN).  BYTES is rounded up to whole pages.
 */
CANCEL_API int cancel_scope_set_stack_size(cancel_scope_t *s, size_t bytes);

/*
 * cancel_set_default_stack_size - the process-wide stack size of task
 * threads (initially 256 KiB; 0 restores that).  Returns 0 or EINVAL
 * (below PTHREAD_STACK_MIN).  cancel_default_stack_size returns it.
 */
CANCEL_API int cancel_set_default_stack_size(size_t bytes);
CANCEL_API size_t cancel_default_stack_size(void);

/* cancel_scope_cancel - cancel S's token (and so every task) with ECANCELED. */
CANCEL_API void cancel_scope_cancel(cancel_scope_t *s);

/*
 * cancel_scope_terminate - the first call records VALUE (given back by
 * join) and cancels S; returns 0.  Later calls (or a call after a RACE
 * winner) change nothing and return EALREADY.  EINVAL for NULL.
 */
CANCEL_API int cancel_scope_terminate(cancel_scope_t *s, void *value);

/* cancel_scope_token - S's token (borrowed: valid until join). */
CANCEL_API cancel_token_t *cancel_scope_token(cancel_scope_t *s);

/*
 * cancel_scope_join - wait for every task of S, however long (not cut
 * short by any cancellation), then free S and its task handles.  Returns
 * the first real failure of a task (never under SUPERVISE; under RACE only
 * when no task succeeded); else the parent's reason when the parent was
 * cancelled; else 0, with *VALUE (when not NULL) the terminate value (the
 * winner's arg under RACE) or NULL.  EDEADLK (nothing done) when called
 * from a task of S; EINVAL for NULL.
 * cancel_scope_join_until - the same with an absolute CLOCK_MONOTONIC
 * DEADLINE (NULL: none); on ETIMEDOUT nothing is freed and S may be
 * inspected and joined again (it counts as a join started: spawn from
 * outside gets EINVAL).  When the result itself is ETIMEDOUT (a deadline
 * parent fired), join_until also returns ETIMEDOUT without freeing; the
 * next join returns it at once and frees S.
 */
CANCEL_API int cancel_scope_join(cancel_scope_t *s, void **value);
CANCEL_API int cancel_scope_join_until(cancel_scope_t *s, const struct timespec *deadline,
                                       void **value);

/*
 * cancel_task_join - wait for TASK (not cut short by cancellation) and put
 * its return code in *RESULT (when not NULL); may be called again.
 * Returns 0, EDEADLK from TASK itself, EINVAL for NULL.
 */
CANCEL_API int cancel_task_join(cancel_task_t *task, int *result);

/* cancel_task_cancel - cancel TASK's token only; its siblings go on. */
CANCEL_API void cancel_task_cancel(cancel_task_t *task);

/* cancel_task_token - TASK's token (borrowed: valid until join), or NULL. */
CANCEL_API cancel_token_t *cancel_task_token(cancel_task_t *task);

/*
 * cancel_task_set_name - name TASK for cancel_scope_dump (copied, at most
 * 31 bytes kept; NULL clears).  Returns 0 or EINVAL.
 */
CANCEL_API int cancel_task_set_name(cancel_task_t *task, const char *name);

/*
 * cancel_scope_dump - write to FD a description of S and one line per
 * live task: name, state, how long it has run, the wrapped call it is
 * blocked in (with its fd, and for how long) and whether its token is
 * cancelled; and where S was cancelled from.  For a join that hangs on a
 * task that ignores cancellation.  Returns 0, EINVAL, or the write error.
 */
CANCEL_API int cancel_scope_dump(cancel_scope_t *s, int fd);

/*
 * Long-lived scopes (servers).  Memory follows the live work: a task
 * spawned without a handle (TASK NULL) is freed, with its token, as soon
 * as it has finished and its result has been counted; a handle keeps it
 * until join or cancel_task_release.  Cancelling a scope costs its live
 * tasks, not its history.
 */

/*
 * cancel_scope_try_spawn - cancel_scope_spawn that never waits for a
 * slot: with the limit reached it starts nothing and returns EBUSY.
 * Otherwise as cancel_scope_spawn (0, ECANCELED, ESHUTDOWN after a drain,
 * EINVAL, ENOMEM, EAGAIN).
 */
CANCEL_API int cancel_scope_try_spawn(cancel_scope_t *s, cancel_task_fn fn, void *arg,
                                      cancel_task_t **task);

/*
 * cancel_scope_start - spawn FN(ARG) in S and wait until it calls
 * cancel_task_started(value) (a listener has bound its port before its
 * caller goes on).  Returns 0 with the value in *READY_VALUE (when not
 * NULL) while the task goes on running; the task's result when it
 * returned before calling started, or ECHILD when that result was 0;
 * ECANCELED (ETIMEDOUT for a deadline) when the caller's current token or
 * the scope is cancelled while it waits: the task is then cancelled and
 * waited for.  TASK (optional) gets a handle on success only.  Spawn's
 * errors otherwise.
 */
CANCEL_API int cancel_scope_start(cancel_scope_t *s, cancel_task_fn fn, void *arg,
                                  void **ready_value, cancel_task_t **task);

/*
 * cancel_task_started - called by a task started with cancel_scope_start:
 * its starter returns 0 with READY_VALUE.  Outside such a task, or a
 * second time, it does nothing.
 */
CANCEL_API void cancel_task_started(void *ready_value);

/*
 * cancel_scope_next - hand out a finished task of S that was spawned with
 * a handle, each exactly once, in the order they finished: 0 with *TASK
 * (the handle, valid until join or cancel_task_release) and *RESULT (its
 * return code), both optional.  Waits for one when none has finished (not
 * cut short by cancellation); ECHILD when no handled task remains that
 * next has not handed out; ETIMEDOUT at the absolute CLOCK_MONOTONIC
 * DEADLINE (NULL: none); EINVAL.  Handle-less tasks never appear.
 */
CANCEL_API int cancel_scope_next(cancel_scope_t *s, const struct timespec *deadline,
                                 cancel_task_t **task, int *result);

/*
 * cancel_task_release - give up the handle TASK: the task is freed as
 * soon as it has finished (at once when it has), and next no longer
 * hands it out.  TASK must not be used afterwards.  NULL is fine.
 */
CANCEL_API void cancel_task_release(cancel_task_t *task);

/*
 * cancel_scope_drain - the graceful stop: from now on spawn, try_spawn
 * and start return ESHUTDOWN; S's drain token is cancelled with ECANCELED
 * at once; running tasks go on; if tasks still run after GRACE_NS
 * nanoseconds S is cancelled (hard, as cancel_scope_cancel; GRACE_NS < 0:
 * never, 0: at once).  The ECANCELEDs the drain and the hard cancel cause
 * are not failures.  A second drain may only shorten the grace (counted
 * from that call); it returns EALREADY otherwise.  Returns 0, EALREADY,
 * EINVAL (S NULL) or ENOMEM.
 */
CANCEL_API int cancel_scope_drain(cancel_scope_t *s, int64_t grace_ns);

/*
 * cancel_scope_drain_token - S's drain token: a child of S's token
 * (cancelled by a hard cancel or the parent's too), cancelled with
 * ECANCELED when the drain begins.  Borrowed: valid until join.  NULL with
 * errno EINVAL (S NULL) or ENOMEM.
 */
CANCEL_API cancel_token_t *cancel_scope_drain_token(cancel_scope_t *s);

/* ---------------------------------------------------------------------- */
/* The whole process at a glance                                           */
/* ---------------------------------------------------------------------- */

/* cancel_dump_all's FLAGS: one JSON document instead of text. */
#define CANCEL_DUMP_JSON 0x1

/*
 * cancel_dump_all - write to FD every open scope of the process as a tree:
 * each scope (mode, live tasks, limit, joining, whether its token is
 * cancelled, with the reason and where from), its live tasks (name, state,
 * how long and on which thread it has run, the wrapped call it is blocked
 * in with its descriptor and for how long, whether its token is cancelled
 * and where from) and, under each task, the scopes opened inside it.
 * FLAGS 0 writes text (as cancel_scope_dump, indented by nesting);
 * CANCEL_DUMP_JSON writes one JSON document with the same content (see
 * cancel_dump_all(3) for its fields).  The state is copied first, then
 * written with no lock held, so a slow FD holds up nothing.  Returns 0,
 * EINVAL (FD < 0, unknown FLAGS), EBADF, ENOMEM, or the write error.
 * Thread safety: any thread (not from a signal handler: see below).
 */
CANCEL_API int cancel_dump_all(int fd, int flags);

/*
 * cancel_dump_on_signal - on every delivery of SIGNO, write
 * cancel_dump_all's text to FD (a later call for the same SIGNO changes
 * FD).  The handler only hands off (async-signal-safe); a library thread
 * writes the dump.  The registration lasts for the life of the process; a
 * fork child that wants dumps calls this again.  Do not use the same
 * signal with cancel_token_cancel_on_signal.  Returns 0, EINVAL (SIGKILL,
 * SIGSTOP, an invalid number, FD < 0), or the error of pipe2,
 * pthread_create or sigaction.
 */
CANCEL_API int cancel_dump_on_signal(int signo, int fd);

#ifdef __cplusplus
}
#endif

#endif /* CANCEL_H */
