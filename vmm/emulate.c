/* emulate: being written */
