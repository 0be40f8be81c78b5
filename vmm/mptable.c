/* mptable: being written */
