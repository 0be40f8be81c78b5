/* boot: being written */
