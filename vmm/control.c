/* control: being written */
