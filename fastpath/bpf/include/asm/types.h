/* The BPF target has no arch headers of its own: the generic 64-bit types fit it. */
#include <asm-generic/int-ll64.h>
