/* vm: being written */
