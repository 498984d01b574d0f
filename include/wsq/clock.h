/* Clocks. Any thread. */
#ifndef WSQ_CLOCK_H
#define WSQ_CLOCK_H

#include <stdint.h>

/* Wall-clock time in ms since the Unix epoch (message timestamps). */
int64_t wsq_now_ms(void);

/* Monotonic time in ns (durations, timers). */
int64_t wsq_mono_ns(void);

/* The same clock read coarsely (a few ms behind at most, several times cheaper): for stamps taken
 * per frame and compared against seconds, such as a connection's last activity. */
int64_t wsq_mono_coarse_ns(void);

#endif
