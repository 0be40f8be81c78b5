/* devices: being written */
