#include <stdlib.h>

/* GCC 14 C++ runtime symbol that Debian 12 lacks, needed by llama-cpp-cffi 0.4.42 (see llama_cpp_logits.py); called
   only when an exception escapes a noexcept function, where terminating is what it does anyway. */
void __cxa_call_terminate(void *exception) {
    (void)exception;
    abort();
}
