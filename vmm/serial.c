/* serial: being written */
