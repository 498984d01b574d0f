/* Clocks. Any thread. */
#ifndef WSQ_CLOCK_H
#define WSQ_CLOCK_H

#include <stdint.h>

/* Wall-clock time in ms since the Unix epoch (message timestamps). */
int64_t wsq_now_ms(void);

/* Monotonic time in ns (durations, timers). */
int64_t wsq_mono_ns(void);

#endif
