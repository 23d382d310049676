#include <cancel.h>
int main(void) { return 0; }
