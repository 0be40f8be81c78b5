/* cpuid: being written */
