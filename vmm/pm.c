/* pm: being written */
