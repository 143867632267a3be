/* Wait queues of processes blocked on one object, in the object's QUEUING_DISCIPLINE:
 * FIFO (in order of arrival) or PRIORITY (highest current priority first, FIFO among
 * equals). */
#include "internal.h"

void waitq_add(struct waitq *q, struct proc *p)
{
    struct proc **at = &q->head;
    if (q->discipline == PRIORITY)
        while (*at && (*at)->priority >= p->priority)
            at = &(*at)->next_waiter;
    else
        while (*at)
            at = &(*at)->next_waiter;
    p->next_waiter = *at;
    *at = p;
    p->queue = q;
    q->count++;
}

void waitq_remove(struct waitq *q, struct proc *p)
{
    for (struct proc **at = &q->head; *at; at = &(*at)->next_waiter)
        if (*at == p) {
            *at = p->next_waiter;
            q->count--;
            break;
        }
    p->next_waiter = NULL;
    p->queue = NULL;
}

struct proc *waitq_pop(struct waitq *q)
{
    struct proc *p = q->head;
    if (p)
        waitq_remove(q, p);
    return p;
}
