/*
 * deadlock_registration.pml — the deadlock detector's registration protocol (src/sys/waits.h),
 * model-checked with spin over every interleaving of 3 threads, each taking two of 3 locks in
 * an order it picks non-deterministically (all 6^3 programs), then releasing them.
 *
 * One atomic step of the model is one atomic step of the code: the lock word's
 * compare-and-swap, the owner store (after taking the word; cleared before releasing it),
 * and everything done under the graph lock (register + walk, unregister). A thread on the
 * contended path looks at the word once more (taking it if it is free by now, without
 * registering), else registers and walks, then sleeps until the word is free, takes it,
 * unregisters, and only then records itself as owner — as OwnedLock::acquire_contended does.
 *
 * Checked:
 *  - no false positive: when a walk refuses a wait, the ground truth (ghost variables: who
 *    really has each word, who really is blocked on which) has a cycle through the refused
 *    thread at that very step; and since the refused thread leaves the graph in the same step,
 *    a second refusal for the same cycle would fail this too (exactly one per cycle);
 *  - no missed cycle: spin's invalid-end-state check. A cycle nobody refused leaves its
 *    threads blocked for ever, which spin reports. With -DTIMED a waiter may also give up at
 *    any step (a timed acquire), checking that timeouts never cause a false positive: a
 *    waiter whose deadline passed is still waiting until it leaves the graph.
 */
#define THREADS 3
#define LOCKS 3
#define NONE 255

byte word[LOCKS];        /* the lock word: 0 free, 1 held */
byte owner[LOCKS];       /* thread + 1, or 0: what the walk reads (a relaxed atomic) */
bool graph_locked;       /* the graph spinlock */
bool registered[THREADS];
byte waits[THREADS];     /* lock index, written under the graph lock */
byte refusals;

/* ghost truth */
byte holder[LOCKS];      /* thread + 1 holding the word, or 0 */
byte blocked_on[THREADS];/* the lock a thread is on the contended path for and has not got */

inline lock_graph()   { atomic { !graph_locked -> graph_locked = true } }
inline unlock_graph() { graph_locked = false }

/* Sets `found` if following owner[] and registered waits[] from thread t comes back to t. */
inline walk(t, l, found) {
    cur = l; steps = 0; found = false;
    do
    :: steps < THREADS && owner[cur] != 0 ->
        h = owner[cur] - 1;
        if
        :: h == t -> found = true; break
        :: h != t && registered[h] -> cur = waits[h]; steps++
        :: else -> break
        fi
    :: else -> break
    od
}

/* Whether the ground truth has a cycle through thread t. */
inline true_cycle(t, result) {
    cur = blocked_on[t]; steps = 0; result = false;
    do
    :: steps < THREADS && cur != NONE && holder[cur] != 0 ->
        h = holder[cur] - 1;
        if
        :: h == t -> result = true; break
        :: else -> cur = blocked_on[h]; steps++
        fi
    :: else -> break
    od
}

/* Takes lock l; sets refused when the detector refused the wait. */
inline acquire(t, l, refused) {
    refused = false;
    if
    :: atomic { word[l] == 0 -> word[l] = 1; holder[l] = t + 1 }
    :: atomic { word[l] != 0 -> blocked_on[t] = l }   /* the try failed: contended path */
        /* One more look before paying for the graph (take_or_mark_slept_on): a lock freed
         * meanwhile is taken without registering. */
        if
        :: atomic { word[l] == 0 -> word[l] = 1; holder[l] = t + 1; blocked_on[t] = NONE }
        :: atomic { word[l] != 0 -> skip }
        lock_graph();
        d_step {
            waits[t] = l; registered[t] = true;
            walk(t, l, found);
            if
            :: found ->
                true_cycle(t, truth);
                assert(truth);              /* no false positive */
                registered[t] = false; waits[t] = NONE; blocked_on[t] = NONE;
                refusals++; refused = true
            :: else -> skip
            fi
        }
        unlock_graph();
        if
        :: refused -> skip
        :: else ->
            if
            :: atomic { word[l] == 0 -> word[l] = 1; holder[l] = t + 1; blocked_on[t] = NONE }
#ifdef TIMED
            :: gave_up = true   /* the deadline passed: the futex wait returns ETIMEDOUT */
#endif
            fi;
            lock_graph();
            /* A waiter that timed out is blocked until it leaves the graph: its call has not
             * returned, and the closing wait and the timeout race (the first to take the
             * graph lock wins, and neither outcome is wrong). */
            d_step { registered[t] = false; waits[t] = NONE; blocked_on[t] = NONE }
            unlock_graph();
#ifdef TIMED
            if
            :: gave_up -> refused = true; gave_up = false   /* ETIMEDOUT: holds nothing new */
            :: else -> skip
            fi
#endif
        fi
        fi
    fi;
    if
    :: !refused -> owner[l] = t + 1
    :: else -> skip
    fi
}

inline release(t, l) {
    owner[l] = 0;
    atomic { word[l] = 0; holder[l] = 0 }
}

proctype thread(byte t) {
    byte first, second, cur, steps, h;
    bool found, truth, refused, gave_up;
    /* any ordered pair of distinct locks */
    if
    :: first = 0; second = 1
    :: first = 0; second = 2
    :: first = 1; second = 0
    :: first = 1; second = 2
    :: first = 2; second = 0
    :: first = 2; second = 1
    fi;
    acquire(t, first, refused);
    if
    :: refused -> goto done
    :: else -> skip
    fi;
    acquire(t, second, refused);
    if
    :: refused -> release(t, first); goto done   /* back off */
    :: else -> skip
    fi;
    release(t, second);
    release(t, first);
done:
    skip
}

init {
    byte i;
    atomic {
        i = 0;
        do
        :: i < THREADS -> waits[i] = NONE; blocked_on[i] = NONE; i++
        :: else -> break
        od;
        run thread(0); run thread(1); run thread(2)
    }
}
