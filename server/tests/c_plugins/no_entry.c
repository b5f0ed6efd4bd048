/* A shared library that is not a Marquee plugin. */
int unrelated_function(void) { return 42; }
