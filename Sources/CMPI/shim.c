#include "CMPI.h"
