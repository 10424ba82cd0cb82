#pragma once
// The agent's references to libevent are weak: the preload shim (which carries the agent's
// objects) must load into programs that do not use libevent at all, even with BIND_NOW. In such
// a program these functions are never called: the agent attaches only to a base that exists.

#include <event2/event.h>

#pragma weak event_base_get_method
#pragma weak event_new
#pragma weak event_add
#pragma weak event_del
#pragma weak event_free
#pragma weak event_priority_set
