/*
 * resolve.c - cancel_getaddrinfo (and getnameinfo for the interposer):
 * name resolution that a cancel can abandon.
 *
 * glibc's resolver cannot be interrupted: it waits inside libc (its own
 * __poll) for as long as its servers take.  So under a current token the
 * lookup runs on a detached library thread, and the caller waits on an
 * eventfd that the lookup writes when it ends, or on its token.  The job
 * is shared by two holders, the caller and the lookup thread, counted in
 * REFS under the job's mutex: whichever lets go last frees it (and, when
 * the caller gave up, the lookup's result with freeaddrinfo).  So an
 * abandoned lookup finishes in the background and leaks nothing, and the
 * caller returns as soon as it is cancelled.
 *
 * With no current token (or under a shield) these are the plain calls.
 * If no thread can be started, the lookup runs in the caller (plain, not
 * cancellable), which is what the caller would have had without us.
 */
#include "interpose.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

struct lookup {
    pthread_mutex_t mutex;
    int refs;                    /* holders: caller, lookup thread; under MUTEX */
    bool done;                   /* under MUTEX */
    int efd;                     /* written once DONE */
    bool name;                   /* getnameinfo rather than getaddrinfo */
    /* getaddrinfo */
    char *node, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res;
    /* getnameinfo */
    struct sockaddr_storage sa;
    socklen_t salen;
    char *host, *serv;           /* buffers of the job, HOSTLEN / SERVLEN bytes */
    socklen_t hostlen, servlen;
    int flags;
    /* outcome */
    int rc, err;
};

static void lookup_free(struct lookup *l)
{
    if (l->res)
        freeaddrinfo(l->res);
    if (l->efd >= 0)
        close(l->efd);
    pthread_mutex_destroy(&l->mutex);
    free(l->node);
    free(l->service);
    free(l->host);
    free(l->serv);
    free(l);
}

/* Drops one holder; the last one frees the job. */
static void lookup_release(struct lookup *l)
{
    pthread_mutex_lock(&l->mutex);
    bool last = --l->refs == 0;
    pthread_mutex_unlock(&l->mutex);
    if (last)
        lookup_free(l);
}

static void lookup_run(struct lookup *l)
{
    if (l->name)
        l->rc = getnameinfo((struct sockaddr *)&l->sa, l->salen, l->host, l->hostlen, l->serv,
                            l->servlen, l->flags);
    else
        l->rc = getaddrinfo(l->node, l->service, l->has_hints ? &l->hints : NULL, &l->res);
    l->err = errno;
}

static void *lookup_thread(void *arg)
{
    struct lookup *l = arg;
    lookup_run(l);
    pthread_mutex_lock(&l->mutex);
    l->done = true;
    /* glibc's own write: never reaches the interposer (interpose.h). */
    (void)eventfd_write(l->efd, 1);
    pthread_mutex_unlock(&l->mutex);
    lookup_release(l);
    return NULL;
}

/*
 * Runs L under T: 0 when L is done (its outcome in L), or the -errno of
 * the cancellation, after which the caller no longer holds L.
 */
static int lookup_wait(cancel_token_t *t, struct lookup *l)
{
    l->refs = 2;
    l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->efd < 0 || cancel__start_service_thread(lookup_thread, l, 0) != 0) {
        lookup_run(l);  /* no thread: the plain, uncancellable lookup */
        l->refs = 1;
        return 0;
    }
    struct pollfd p = { .fd = l->efd, .events = POLLIN, .revents = 0 };
    int rc = cancel__wait_ready(t, &p, 1, NULL, "getaddrinfo");
    pthread_mutex_lock(&l->mutex);
    bool done = l->done;
    pthread_mutex_unlock(&l->mutex);
    if (done)
        return 0;       /* progress wins: a lookup that ended is reported */
    lookup_release(l);  /* abandoned: the lookup thread frees it */
    return rc < 0 ? rc : -ECANCELED;
}

static struct lookup *lookup_new(void)
{
    struct lookup *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->efd = -1;
    pthread_mutex_init(&l->mutex, NULL);
    return l;
}

static int gai_t(cancel_token_t *t, const char *node, const char *service,
                 const struct addrinfo *hints, struct addrinfo **res)
{
    int err = cancel__cancelled(t);
    if (err) {
        errno = err;
        return EAI_SYSTEM;
    }
    if (!res || (!node && !service))
        return getaddrinfo(node, service, hints, res); /* its own error, at once */
    struct lookup *l = lookup_new();
    if (!l || (node && !(l->node = strdup(node))) ||
        (service && !(l->service = strdup(service)))) {
        if (l)
            lookup_free(l);
        return EAI_MEMORY;
    }
    if (hints) {
        /* POSIX: every other member of HINTS is 0 or NULL. */
        l->hints.ai_flags = hints->ai_flags;
        l->hints.ai_family = hints->ai_family;
        l->hints.ai_socktype = hints->ai_socktype;
        l->hints.ai_protocol = hints->ai_protocol;
        l->has_hints = true;
    }
    int rc = lookup_wait(t, l);
    if (rc < 0) {
        errno = -rc;
        return EAI_SYSTEM;
    }
    *res = l->res;
    l->res = NULL;
    rc = l->rc;
    int saved = l->err;
    lookup_release(l);
    errno = saved;
    return rc;
}

int cancel_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
    cancel_token_t *t = cancel_current();
    if (!t)
        return getaddrinfo(node, service, hints, res);
    IO_BEGIN();
    int rc = gai_t(t, node, service, hints, res);
    IO_END();
    return rc;
}

int cancel__getnameinfo(cancel_token_t *t, const struct sockaddr *sa, socklen_t salen,
                        char *host, socklen_t hostlen, char *serv, socklen_t servlen,
                        int flags)
{
    int err = cancel__cancelled(t);
    if (err) {
        errno = err;
        return EAI_SYSTEM;
    }
    if (!t || !sa || salen > sizeof(struct sockaddr_storage))
        return getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    struct lookup *l = lookup_new();
    if (!l)
        return EAI_MEMORY;
    l->name = true;
    memcpy(&l->sa, sa, salen);
    l->salen = salen;
    l->hostlen = host ? hostlen : 0;
    l->servlen = serv ? servlen : 0;
    l->flags = flags;
    if ((l->hostlen && !(l->host = malloc(l->hostlen))) ||
        (l->servlen && !(l->serv = malloc(l->servlen)))) {
        lookup_free(l);
        return EAI_MEMORY;
    }
    int rc = lookup_wait(t, l);
    if (rc < 0) {
        errno = -rc;
        return EAI_SYSTEM;
    }
    rc = l->rc;
    if (rc == 0) {
        if (l->hostlen)
            memcpy(host, l->host, l->hostlen);
        if (l->servlen)
            memcpy(serv, l->serv, l->servlen);
    }
    int saved = l->err;
    lookup_release(l);
    errno = saved;
    return rc;
}
