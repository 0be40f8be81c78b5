/* blk: being written */
