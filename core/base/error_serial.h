/*
 * error_serial.h - whether a call set the thread's error message, without clearing it first.
 *
 * LOOM_PLUGIN_CALL clears the message before a call into a plugin and looks at it after. A
 * caller that may run while an earlier failure's message is still to be reported (the comm
 * calls: comm_calls.c) cannot clear it; it compares the serial before and after instead. Not
 * part of the embedding API (error.h is installed; this header is not).
 */
#ifndef LOOM_CORE_ERROR_SERIAL_H
#define LOOM_CORE_ERROR_SERIAL_H

/* How many messages this thread has set so far (loom_error, loom_error_context, api->fail). */
unsigned long loom_error_serial(void);

#endif
