/* file: being written */
