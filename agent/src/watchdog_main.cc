// stallwatch-watchdog: the watchdog process the agent starts for a single-threaded host
// (watchdog_process.h). Not meant to be run by hand.
#include "watchdog_process.h"

int main(int argc, char** argv) { return stallwatch::internal::WatchdogProcessMain(argc, argv); }
